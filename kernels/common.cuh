// Shared by every kernel: warp/block reductions and the two macros that differ between NVRTC and the
// host emulator (kernels/emu/shim.h defines the host versions; NVRTC sees the ones below).
#pragma once

#ifndef CULTUREMERT_EMU
#define EMU_EXPORT(name)
#define DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char dyn_smem_##name[]; \
  T* name = reinterpret_cast<T*>(dyn_smem_##name)
#endif

#define FULL_MASK 0xffffffffu

// Sum over the 32 lanes of a warp; every lane gets the total (butterfly, fixed order).
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
  return v;
}

// Sum over a 1-D block whose size is a multiple of 32; every thread gets the total.
// `scratch`: 32 floats of shared memory, reusable right after the call returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();  // everyone has read scratch before a caller reuses it
  return v;
}

// Counter-based dropout keep decision, exactly `ops::dropout::dropout_keep` (src/ops/dropout.rs):
// splitmix64's output mix of seed ^ index*GOLDEN, top 24 bits as u in [0, 1), keep = u >= p.
// Shared by kernels/dropout.cu (flat index) and kernels/attention.cu (probability (b, h, i, j)).
#define DROPOUT_GOLDEN 0x9E3779B97F4A7C15ull
__device__ __forceinline__ bool dropout_keep(unsigned long long seed, unsigned long long index, float p) {
  unsigned long long z = seed ^ (index * DROPOUT_GOLDEN);
  z += DROPOUT_GOLDEN;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = (float)(unsigned)(z >> 40) * (1.0f / 16777216.0f);  // exact: 24 bits
  return u >= p;
}
