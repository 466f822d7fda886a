// Emulator-only probe of mma.cuh's mma_m16n8k16 on one warp: D[16][8] = A[16][16] * B[16][8] + C.
// Each lane fills its fragment registers element by element from the PTX ISA formulas
// ("Matrix Fragments for mma.m16n8k16 with floating point type"), written here independently of
// gemm_tc.cu's shared-memory code, and writes D back by the accumulator formula. A, B are row-major
// 16-bit bits (bf16 when `bf16` != 0, else f16); C, D row-major f32. Launch: grid 1, block 32.
#include "common.cuh"
#include "mma.cuh"

template <bool BF16>
__device__ void mma_layout_probe_impl(float* D, const unsigned short* A, const unsigned short* B, const float* C) {
  const int lane = threadIdx.x, group = lane >> 2, tig = lane % 4;
  unsigned a[4] = {0u, 0u, 0u, 0u}, b[2] = {0u, 0u};
  // A elements a0..a7, two per register, element i in bits 16*(i%2).
  for (int i = 0; i < 8; ++i) {
    const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
    const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
    a[i / 2] |= (unsigned)A[row * 16 + col] << (16 * (i % 2));
  }
  // B elements b0..b3: row (k) = tig*2 + (i&1) (+8 for i >= 2), column = groupID.
  for (int i = 0; i < 4; ++i) {
    const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
    b[i / 2] |= (unsigned)B[row * 8 + group] << (16 * (i % 2));
  }
  // Accumulators c0..c3: row = groupID (+8 for i >= 2), column = tig*2 + (i&1).
  float acc[4];
  for (int i = 0; i < 4; ++i) acc[i] = C[(group + (i >= 2 ? 8 : 0)) * 8 + tig * 2 + (i & 1)];
  mma_m16n8k16<BF16>(acc, a, b);
  for (int i = 0; i < 4; ++i) D[(group + (i >= 2 ? 8 : 0)) * 8 + tig * 2 + (i & 1)] = acc[i];
}

extern "C" __global__ void mma_layout_probe(float* D, const unsigned short* A, const unsigned short* B,
                                            const float* C, int bf16) {
  if (bf16) mma_layout_probe_impl<true>(D, A, B, C);
  else mma_layout_probe_impl<false>(D, A, B, C);
}
EMU_EXPORT(mma_layout_probe)
