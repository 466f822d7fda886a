// Tensor-core building blocks shared by the half-precision kernels: f32 <-> f16/bf16 bit conversions
// (round to nearest even) and the warp-wide mma.m16n8k16 (f16 or bf16 inputs, f32 accumulators).
// Under NVRTC these are single PTX instructions; under the host emulator (CULTUREMERT_EMU) they are
// C++ with the exact per-lane register layout of the PTX ISA ("Matrix Fragments for mma.m16n8k16"),
// so a kernel that packs its fragments wrongly fails on the emulator as it would on the GPU.
//
// Fragment layout (g = lane / 4, t = lane % 4; each .b32 register packs two 16-bit elements, the
// lower half holding the element with the smaller column/row index):
//   A (16x16, row-major):  a[0] = A[g][2t..2t+1]     a[1] = A[g+8][2t..2t+1]
//                          a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, "col": k pairs packed):  b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   C/D (16x8, f32):       c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
#pragma once

#include "common.cuh"

// ---- scalar conversions (bits of the 16-bit type in an unsigned short) ----------------------------
#ifdef CULTUREMERT_EMU
__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) { return __float2half(f).x; }
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) { return __float2bfloat16(f).x; }
__device__ __forceinline__ float f16_bits_to_f32(unsigned short h) { return __half2float(__half{h}); }
#else
__device__ __forceinline__ unsigned short f32_to_f16_bits(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float f) {
  unsigned short h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float f16_bits_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
#endif
// bf16 is the upper half of an f32: widening is exact and needs no instruction.
__device__ __forceinline__ float bf16_bits_to_f32(unsigned short h) {
  return __uint_as_float((unsigned)h << 16);
}

template <bool BF16>
__device__ __forceinline__ float half_bits_to_f32(unsigned short h) {
  return BF16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
}
template <bool BF16>
__device__ __forceinline__ unsigned short f32_to_half_bits(float f) {
  return BF16 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
}

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32: acc += A * B ---------------
// Must be called by all 32 lanes of a warp together (it is a warp collective on both sides).
#ifdef CULTUREMERT_EMU
template <bool BF16>
__device__ __forceinline__ void mma_m16n8k16(float acc[4], const unsigned a[4], const unsigned b[2]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // This lane's outputs are rows g and g+8: all of A's fragment registers from the four lanes of
  // group g hold exactly those two rows. Gather them: rows[r][k] (r = 0 -> g, r = 1 -> g+8).
  float rows[2][16];
  for (int src = 0; src < 4; ++src) {
    for (int reg = 0; reg < 4; ++reg) {
      const unsigned v = __shfl_sync(FULL_MASK, a[reg], g * 4 + src);
      const int r = reg % 2, k = 2 * src + 8 * (reg / 2);
      rows[r][k] = half_bits_to_f32<BF16>((unsigned short)(v & 0xffffu));
      rows[r][k + 1] = half_bits_to_f32<BF16>((unsigned short)(v >> 16));
    }
  }
  // Its columns are 2t and 2t+1: B's registers of the lanes of groups 2t and 2t+1 hold them.
  float cols[2][16];
  for (int c = 0; c < 2; ++c) {
    for (int src = 0; src < 4; ++src) {
      for (int reg = 0; reg < 2; ++reg) {
        const unsigned v = __shfl_sync(FULL_MASK, b[reg], (2 * t + c) * 4 + src);
        const int k = 2 * src + 8 * reg;
        cols[c][k] = half_bits_to_f32<BF16>((unsigned short)(v & 0xffffu));
        cols[c][k + 1] = half_bits_to_f32<BF16>((unsigned short)(v >> 16));
      }
    }
  }
  // Products of two 16-bit floats are exact in f32; the sum runs over k in a fixed order.
  for (int i = 0; i < 4; ++i) {
    float s = acc[i];
    for (int k = 0; k < 16; ++k) s += rows[i / 2][k] * cols[i % 2][k];
    acc[i] = s;
  }
}
#else
template <bool BF16>
__device__ __forceinline__ void mma_m16n8k16(float acc[4], const unsigned a[4], const unsigned b[2]) {
  if (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif
