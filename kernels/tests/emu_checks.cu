// Emulator-only test kernels (never compiled by NVRTC): deliberately broken kernels the emulator must
// catch, a shuffle/vote semantics probe, and a barrier loop for timing fiber switches.
#include "../common.cuh"

// BUG: reads a neighbour's shared slot without __syncthreads; the neighbour may not have written it.
extern "C" __global__ void broken_missing_sync(float* out, const float* in, int n) {
  __shared__ float tile[256];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? in[i] : 0.0f;
  const float right = tile[(threadIdx.x + 1) % blockDim.x];
  if (i < n) out[i] = right;
}
EMU_EXPORT(broken_missing_sync)

// BUG: the last thread reads one float past the end of the dynamic shared array.
extern "C" __global__ void broken_oob_shared(float* out, const float* in, int n) {
  DYNAMIC_SHARED(float, tile);  // blockDim.x floats
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? in[i] : 0.0f;
  __syncthreads();
  if (i < n) out[i] = tile[threadIdx.x] + tile[threadIdx.x + 1];
}
EMU_EXPORT(broken_oob_shared)

// BUG: two different __syncthreads sites.
extern "C" __global__ void broken_divergent_barrier(float* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}
EMU_EXPORT(broken_divergent_barrier)

// BUG: lane 0 waits at a warp sync for lane 1, lane 1 waits at the block barrier for lane 0.
extern "C" __global__ void broken_deadlock(float* out) {
  if (threadIdx.x == 0) __syncwarp(0x3u);
  __syncthreads();
  if (threadIdx.x == 1) __syncwarp(0x3u);
  out[threadIdx.x] = 1.0f;
}
EMU_EXPORT(broken_deadlock)

// BUG: early return, then a barrier the returned threads never reach.
extern "C" __global__ void broken_barrier_after_exit(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __syncthreads();
  out[i] = 1.0f;
}
EMU_EXPORT(broken_barrier_after_exit)

// BUG: only lanes 0..15 take part, but xor 16 reads lanes 16..31.
extern "C" __global__ void broken_shfl_nonparticipating(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_xor_sync(0x0000ffffu, v, 16);
  out[threadIdx.x] = v;
}
EMU_EXPORT(broken_shfl_nonparticipating)

extern "C" __global__ void broken_trap(float* out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) __trap();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
EMU_EXPORT(broken_trap)

// Probe: out[lane * 8 + k] for each warp collective flavour (width 8 segments for the shuffles).
extern "C" __global__ void probe_warp_ops(int* out) {
  const int lane = threadIdx.x;
  int* o = out + lane * 8;
  o[0] = __shfl_sync(FULL_MASK, lane * 10, 3, 8);
  o[1] = __shfl_up_sync(FULL_MASK, lane * 10, 2, 8);
  o[2] = __shfl_down_sync(FULL_MASK, lane * 10, 3, 8);
  o[3] = __shfl_xor_sync(FULL_MASK, lane * 10, 5);
  o[4] = (int)__ballot_sync(FULL_MASK, lane % 3 == 0);
  o[5] = __any_sync(FULL_MASK, lane == 17);
  o[6] = __all_sync(FULL_MASK, lane < 31);
  o[7] = __syncthreads_count(lane % 4 == 0);
}
EMU_EXPORT(probe_warp_ops)

// Timing: `iters` block barriers, i.e. iters * blockDim fiber switches per block.
extern "C" __global__ void probe_barrier_loop(int* out, int iters) {
  int s = 0;
  for (int i = 0; i < iters; ++i) {
    s += i;
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}
EMU_EXPORT(probe_barrier_loop)

// BUG: the last thread reads one float past a static shared array (caught under ASan through
// -fsanitize-sections=emu_shared; without ASan the value depends on the section layout).
extern "C" __global__ void broken_oob_static_shared(float* out, const float* in, int n) {
  __shared__ float tile[32];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? in[i] : 0.0f;
  __syncthreads();
  if (i < n) out[i] = tile[threadIdx.x] + tile[threadIdx.x + 1];
}
EMU_EXPORT(broken_oob_static_shared)

// Probe: __half / __nv_bfloat16 round trips. bits[2i] = f16 bits, bits[2i+1] = bf16 bits of x[i];
// back[2i], back[2i+1] = the values converted back to float.
extern "C" __global__ void probe_half_conversions(unsigned short* bits, float* back, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __half h = __float2half(x[i]);
  const __nv_bfloat16 b = __float2bfloat16(x[i]);
  bits[2 * i] = h.x;
  bits[2 * i + 1] = b.x;
  back[2 * i] = __half2float(h);
  back[2 * i + 1] = __bfloat162float(b);
}
EMU_EXPORT(probe_half_conversions)
