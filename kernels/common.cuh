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
