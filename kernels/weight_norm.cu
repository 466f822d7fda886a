// torch weight_norm over v viewed as [outer, n, inner]: slot s owns the elements (o * n + s) * inner + i,
// w = g[s] * v / ||v restricted to slot s||. dim 0 of v [d0, d1, d2] is (1, d0, d1 d2), dim 2 is
// (d0 d1, d2, 1). Forward and backward each fuse the per-slot reduction with the elementwise pass.
// Two layouts, both deterministic (fixed summation order, no atomics):
// - rows (inner > 1): one 256-thread block per slot, block_sum over its elements;
// - cols (inner == 1, the positional conv's dim 2): a slot is a strided column, so a block takes
//   COL_SLOTS adjacent slots x COL_ROWS row groups; a warp reads 4 rows x 8 adjacent columns (full
//   32-byte sectors), and the COL_ROWS partial sums of a slot are added by a fixed shared-memory tree.
#include "common.cuh"

#define ROW_THREADS 256
#define COL_SLOTS 8
#define COL_ROWS 64

// Sum of a[e] * b[e] over the elements e of slot s (rows layout); every thread gets the total.
__device__ __forceinline__ float slot_dot_rows(const float* a, const float* b, long long outer, int n, long long inner,
                                               int s, float* scratch) {
  float acc = 0.0f;
  for (long long j = threadIdx.x; j < outer * inner; j += blockDim.x) {
    const long long e = (j / inner * n + s) * inner + j % inner;
    acc += a[e] * b[e];
  }
  return block_sum(acc, scratch);
}

// Sum of a[o, s] * b[o, s] over o for s = blockIdx.x * COL_SLOTS + threadIdx.x (cols layout, [outer, n]);
// every thread of the column gets the total. `red`: COL_ROWS x COL_SLOTS floats of shared memory.
__device__ __forceinline__ float slot_dot_cols(const float* a, const float* b, long long outer, int n,
                                               float (*red)[COL_SLOTS]) {
  const int x = threadIdx.x, y = threadIdx.y, s = blockIdx.x * COL_SLOTS + x;
  float acc = 0.0f;
  if (s < n)
    for (long long o = y; o < outer; o += COL_ROWS) acc += a[o * n + s] * b[o * n + s];
  red[y][x] = acc;
  __syncthreads();
  for (int half = COL_ROWS / 2; half > 0; half >>= 1) {
    if (y < half) red[y][x] += red[y + half][x];
    __syncthreads();
  }
  const float total = red[0][x];
  __syncthreads();  // everyone has read red before a caller reuses it
  return total;
}

// ---- forward ------------------------------------------------------------------------------------

// norms[s] = ||v_s||, w_s = v_s * (g[s] / norms[s]). grid.x = n, block ROW_THREADS.
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
    weight_norm_forward_rows_f32(float* __restrict__ w, float* __restrict__ norms, const float* __restrict__ g,
                                 const float* __restrict__ v, long long outer, int n, long long inner) {
  __shared__ float scratch[32];
  const int s = blockIdx.x;
  const float norm = sqrtf(slot_dot_rows(v, v, outer, n, inner, s, scratch));
  const float scale = g[s] / norm;
  if (threadIdx.x == 0) norms[s] = norm;
  for (long long j = threadIdx.x; j < outer * inner; j += blockDim.x) {
    const long long e = (j / inner * n + s) * inner + j % inner;
    w[e] = v[e] * scale;
  }
}
EMU_EXPORT(weight_norm_forward_rows_f32)

// Same for inner == 1: v, w [outer, n]. grid.x = ceil(n / COL_SLOTS), block (COL_SLOTS, COL_ROWS).
extern "C" __global__ void __launch_bounds__(COL_SLOTS * COL_ROWS)
    weight_norm_forward_cols_f32(float* __restrict__ w, float* __restrict__ norms, const float* __restrict__ g,
                                 const float* __restrict__ v, long long outer, int n) {
  __shared__ float red[COL_ROWS][COL_SLOTS];
  const int s = blockIdx.x * COL_SLOTS + threadIdx.x;
  const float norm = sqrtf(slot_dot_cols(v, v, outer, n, red));
  if (s < n) {
    const float scale = g[s] / norm;
    if (threadIdx.y == 0) norms[s] = norm;
    for (long long o = threadIdx.y; o < outer; o += COL_ROWS) w[o * n + s] = v[o * n + s] * scale;
  }
}
EMU_EXPORT(weight_norm_forward_cols_f32)

// ---- backward -----------------------------------------------------------------------------------

// With c = sum over the slot of dw * v and m = norms[s]: dg[s] += c / m; dv += (g/m) dw - (g c / m^3) v.
// Either output may be null.
__device__ __forceinline__ void weight_norm_coefficients(float c, float g, float m, float* a, float* b) {
  *a = g / m;
  *b = (g / m) * (c / m) / m;  // g c / m^3 without overflowing m^3
}

extern "C" __global__ void __launch_bounds__(ROW_THREADS)
    weight_norm_backward_rows_f32(float* __restrict__ dg, float* __restrict__ dv, const float* __restrict__ dw,
                                  const float* __restrict__ g, const float* __restrict__ v,
                                  const float* __restrict__ norms, long long outer, int n, long long inner) {
  __shared__ float scratch[32];
  const int s = blockIdx.x;
  const float c = slot_dot_rows(dw, v, outer, n, inner, s, scratch);
  const float m = norms[s];
  if (dg != nullptr && threadIdx.x == 0) dg[s] += c / m;
  if (dv == nullptr) return;  // after the only barrier
  float a, b;
  weight_norm_coefficients(c, g[s], m, &a, &b);
  for (long long j = threadIdx.x; j < outer * inner; j += blockDim.x) {
    const long long e = (j / inner * n + s) * inner + j % inner;
    dv[e] += a * dw[e] - b * v[e];
  }
}
EMU_EXPORT(weight_norm_backward_rows_f32)

extern "C" __global__ void __launch_bounds__(COL_SLOTS * COL_ROWS)
    weight_norm_backward_cols_f32(float* __restrict__ dg, float* __restrict__ dv, const float* __restrict__ dw,
                                  const float* __restrict__ g, const float* __restrict__ v,
                                  const float* __restrict__ norms, long long outer, int n) {
  __shared__ float red[COL_ROWS][COL_SLOTS];
  const int s = blockIdx.x * COL_SLOTS + threadIdx.x;
  const float c = slot_dot_cols(dw, v, outer, n, red);
  if (s >= n) return;  // after the last barrier
  const float m = norms[s];
  if (dg != nullptr && threadIdx.y == 0) dg[s] += c / m;
  if (dv == nullptr) return;
  float a, b;
  weight_norm_coefficients(c, g[s], m, &a, &b);
  for (long long o = threadIdx.y; o < outer; o += COL_ROWS) {
    const long long e = o * n + s;
    dv[e] += a * dw[e] - b * v[e];
  }
}
EMU_EXPORT(weight_norm_backward_cols_f32)
