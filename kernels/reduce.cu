// Deterministic global L2 norm over many tensors (gradient clipping): no float atomics, fixed order.
// Pass 1: block (bx, t) sums squares of tensor t over a grid-stride range, writes one partial.
// Pass 2: one block sums all partials in index order and writes sqrt(total).
#include "common.cuh"

#define NORM_THREADS 256

// ptrs[t] / lens[t]: device address and length of tensor t; partials: [tensors * gridDim.x].
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    global_norm_partials_f32(float* __restrict__ partials, const unsigned long long* __restrict__ ptrs,
                             const long long* __restrict__ lens) {
  __shared__ float scratch[32];
  const int t = blockIdx.y;
  const float* p = reinterpret_cast<const float*>(ptrs[t]);
  const long long n = lens[t];
  float s = 0.0f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    s += p[i] * p[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[(long long)t * gridDim.x + blockIdx.x] = s;
}
EMU_EXPORT(global_norm_partials_f32)

// One block: out[0] = sqrt(sum of partials[0..n)).
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    global_norm_finish_f32(float* __restrict__ out, const float* __restrict__ partials, int n) {
  __shared__ float scratch[32];
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = sqrtf(s);
}
EMU_EXPORT(global_norm_finish_f32)

// out[c] (= or +=) sum over rows of x[r, c], rows summed in index order (bias gradients).
extern "C" __global__ void column_sum_f32(float* __restrict__ out, const float* __restrict__ x, int rows, int cols,
                                          int accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int r = 0; r < rows; ++r) s += x[(long long)r * cols + c];
  out[c] = accumulate ? out[c] + s : s;
}
EMU_EXPORT(column_sum_f32)
