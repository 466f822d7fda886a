// Deterministic global L2 norm over many tensors (gradient clipping): no float atomics, fixed order.
// Pass 1: block (bx, t) sums squares of tensor t over a grid-stride range, writes one partial.
// Pass 2: one block sums all partials in index order and writes sqrt(total).
// Column sums (bias gradients) and the second pass of every split reduction (sum_partials_f32) follow.
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

// out[i] (= or +=) Σ_{s < S} partials[s*n + i], s in increasing order: the second pass of a split
// reduction (conv1d dweight/dbias, column sums, layer norm dweight/dbias). Grid-stride over i.
extern "C" __global__ void sum_partials_f32(float* __restrict__ out, const float* __restrict__ partials, int n, int S,
                                            int accumulate) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int k = 0; k < S; ++k) s += partials[(long long)k * n + i];
    out[i] = accumulate ? out[i] + s : s;
  }
}
EMU_EXPORT(sum_partials_f32)

// out[c] (= or +=) sum over rows of x[r, c] (bias gradients), deterministic two-stage column reduction.
// Block (32, COL_WARPS) owns 32 consecutive columns (lane = column: each warp load is one 128-byte
// row segment) and the rows [s*chunk, min(rows, (s+1)*chunk)) of chunk s = blockIdx.y: warp w sums rows
// w, w + COL_WARPS, ... (four loads issued before their adds, to keep bytes in flight), then the warp
// sums are added in warp order. With partials (S > 1) the block stores partials[s*cols + c] and
// sum_partials_f32 finishes; otherwise (S == 1) it writes out. grid (ceil(cols / 32), S), block (32, COL_WARPS).
#define COL_WARPS 8
extern "C" __global__ void __launch_bounds__(32 * COL_WARPS)
    column_sum_f32(float* __restrict__ out, float* __restrict__ partials, const float* __restrict__ x, int rows,
                   int cols, int chunk, int accumulate) {
  __shared__ float warp_part[COL_WARPS][32];
  const int lane = threadIdx.x, w = threadIdx.y, c = blockIdx.x * 32 + lane, split = blockIdx.y;
  const int r_end = min(rows, split * chunk + chunk);
  float s = 0.0f;
  if (c < cols) {
    const float* xc = x + c;
    int r = split * chunk + w;
    for (; r + 3 * COL_WARPS < r_end; r += 4 * COL_WARPS) {
      const float v0 = xc[(long long)r * cols], v1 = xc[(long long)(r + COL_WARPS) * cols];
      const float v2 = xc[(long long)(r + 2 * COL_WARPS) * cols], v3 = xc[(long long)(r + 3 * COL_WARPS) * cols];
      s += v0, s += v1, s += v2, s += v3;  // same order as one row at a time
    }
    for (; r < r_end; r += COL_WARPS) s += xc[(long long)r * cols];
  }
  warp_part[w][lane] = s;
  __syncthreads();
  if (w == 0 && c < cols) {
    float t = 0.0f;
    for (int i = 0; i < COL_WARPS; ++i) t += warp_part[i][lane];
    if (partials != nullptr)
      partials[(long long)split * cols + c] = t;
    else
      out[c] = accumulate ? out[c] + t : t;
  }
}
EMU_EXPORT(column_sum_f32)
