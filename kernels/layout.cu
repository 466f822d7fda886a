// Layout, masking, pooling, gathering and small loss kernels of the whole-model device path; each is the
// device twin of a CPU op (see src/cuda/layout.rs). Elementwise kernels use grid-stride loops over
// 64-bit indices. Reductions never use atomics: every output is summed by one thread (or one block) in
// a fixed order, so results do not depend on scheduling.
#include "common.cuh"

#define TILE 32
#define TILE_ROWS 8
#define REDUCE_THREADS 256

#define GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// ---- transpose ------------------------------------------------------------------------------------

// x [B, R, C] -> out [B, C, R] (= or +=). Block (32, 8) moves one 32x32 tile through shared memory so
// both the read and the write are coalesced; the +1 column of padding puts the 32 elements of a tile
// column in 32 different banks. grid.z strides over the batch.
extern "C" __global__ void __launch_bounds__(TILE * TILE_ROWS)
    transpose_last2_f32(float* __restrict__ out, const float* __restrict__ x, int batch, int rows, int cols,
                        int accumulate) {
  __shared__ float tile[TILE][TILE + 1];
  const int c0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
  const long long plane = (long long)rows * cols;
  for (int b = blockIdx.z; b < batch; b += gridDim.z) {
    const float* xb = x + b * plane;
    float* ob = out + b * plane;
    for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
      const int r = r0 + i, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[i][threadIdx.x] = xb[(long long)r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
      const int c = c0 + i, r = r0 + threadIdx.x;  // out[c, r]
      if (c < cols && r < rows) {
        const long long o = (long long)c * rows + r;
        const float v = tile[threadIdx.x][i];
        ob[o] = accumulate ? ob[o] + v : v;
      }
    }
    __syncthreads();  // the tile is overwritten by the next batch item
  }
}
EMU_EXPORT(transpose_last2_f32)

// ---- narrow -----------------------------------------------------------------------------------------

// out[o, t] = x[o, t] for x [outer, in_len], out [outer, out_len], t < out_len.
extern "C" __global__ void narrow_last_f32(float* __restrict__ out, const float* __restrict__ x, long long outer,
                                           int in_len, int out_len) {
  GRID_STRIDE(i, outer * out_len) {
    const long long o = i / out_len, t = i % out_len;
    out[i] = x[o * in_len + t];
  }
}
EMU_EXPORT(narrow_last_f32)

// dx[o, t] += dout[o, t] for t < out_len; the tail t >= out_len is untouched.
extern "C" __global__ void narrow_last_backward_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                                    long long outer, int in_len, int out_len) {
  GRID_STRIDE(i, outer * out_len) {
    const long long o = i / out_len, t = i % out_len;
    dx[o * in_len + t] += dout[i];
  }
}
EMU_EXPORT(narrow_last_backward_f32)

// ---- row masks ----------------------------------------------------------------------------------

// out[r, :] (= or +=) keep[r] ? x[r, :] : 0. Accumulating leaves dropped rows untouched.
extern "C" __global__ void mask_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                         const unsigned char* __restrict__ keep, long long rows, int cols,
                                         int accumulate) {
  GRID_STRIDE(i, rows * cols) {
    const bool k = keep[i / cols] != 0;
    if (accumulate) {
      if (k) out[i] += x[i];
    } else {
      out[i] = k ? x[i] : 0.0f;
    }
  }
}
EMU_EXPORT(mask_rows_f32)

// out[r, :] = masked[r] ? emb : x[r, :]  (wav2vec2/HuBERT masked_spec_embed).
extern "C" __global__ void replace_masked_rows_forward_f32(float* __restrict__ out, const float* __restrict__ x,
                                                           const float* __restrict__ emb,
                                                           const unsigned char* __restrict__ masked, long long rows,
                                                           int cols) {
  GRID_STRIDE(i, rows * cols) out[i] = masked[i / cols] ? emb[i % cols] : x[i];
}
EMU_EXPORT(replace_masked_rows_forward_f32)

// dx[r, :] += dout[r, :] for the rows that were not masked.
extern "C" __global__ void replace_masked_rows_backward_dx_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                                               const unsigned char* __restrict__ masked,
                                                               long long rows, int cols) {
  GRID_STRIDE(i, rows * cols) {
    if (!masked[i / cols]) dx[i] += dout[i];
  }
}
EMU_EXPORT(replace_masked_rows_backward_dx_f32)

// demb[c] += dout[r, c] over the masked rows, one thread per column adding rows in index order (the
// CPU op's order, so the result is bit-identical to it).
extern "C" __global__ void replace_masked_rows_backward_demb_f32(float* __restrict__ demb,
                                                                 const float* __restrict__ dout,
                                                                 const unsigned char* __restrict__ masked, int rows,
                                                                 int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = demb[c];
  for (int r = 0; r < rows; ++r)
    if (masked[r]) s += dout[(long long)r * cols + c];
  demb[c] = s;
}
EMU_EXPORT(replace_masked_rows_backward_demb_f32)

// ---- mean pooling over time ---------------------------------------------------------------------

// Valid frame count of batch item b: lengths[b] clamped to [0, frames] (device data is not checked).
__device__ __forceinline__ int pool_length(const int* lengths, int b, int frames) {
  const int len = lengths[b];
  return len < 0 ? 0 : (len > frames ? frames : len);
}

// out[b, h] = mean over t < len(b) of x[b, t, h]; 0 when len(b) = 0. grid (ceil(dim / blockDim.x), batch):
// one thread per (b, h) sums its frames in order.
extern "C" __global__ void mean_pool_time_forward_f32(float* __restrict__ out, const float* __restrict__ x,
                                                      const int* __restrict__ lengths, int frames, int dim) {
  const int h = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (h >= dim) return;
  const int len = pool_length(lengths, b, frames);
  const float* xb = x + (long long)b * frames * dim + h;
  float s = 0.0f;
  for (int t = 0; t < len; ++t) s += xb[(long long)t * dim];
  out[(long long)b * dim + h] = len > 0 ? s / (float)len : 0.0f;
}
EMU_EXPORT(mean_pool_time_forward_f32)

// dx[b, t, h] += dout[b, h] * (1 / len(b)) for t < len(b).
extern "C" __global__ void mean_pool_time_backward_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                                       const int* __restrict__ lengths, int batch, int frames,
                                                       int dim) {
  GRID_STRIDE(i, (long long)batch * frames * dim) {
    const long long bt = i / dim;
    const int b = (int)(bt / frames), t = (int)(bt % frames), h = (int)(i % dim);
    const int len = pool_length(lengths, b, frames);
    if (t < len) dx[i] += dout[(long long)b * dim + h] * (1.0f / (float)len);
  }
}
EMU_EXPORT(mean_pool_time_backward_f32)

// ---- fill, copy, axpy ---------------------------------------------------------------------------

extern "C" __global__ void fill_f32(float* __restrict__ buf, float value, long long n) {
  GRID_STRIDE(i, n) buf[i] = value;
}
EMU_EXPORT(fill_f32)

extern "C" __global__ void copy_f32(float* __restrict__ dst, const float* __restrict__ src, long long n) {
  GRID_STRIDE(i, n) dst[i] = src[i];
}
EMU_EXPORT(copy_f32)

// dst += alpha * src
extern "C" __global__ void add_scaled_f32(float* __restrict__ dst, const float* __restrict__ src, float alpha,
                                          long long n) {
  GRID_STRIDE(i, n) dst[i] += alpha * src[i];
}
EMU_EXPORT(add_scaled_f32)

// ---- row gather ---------------------------------------------------------------------------------

// out[i, :] = x[index[i], :]; an index outside [0, rows) gives a zero row.
extern "C" __global__ void gather_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                           const int* __restrict__ index, long long n, int rows, int cols) {
  GRID_STRIDE(e, n * cols) {
    const int r = index[e / cols];
    out[e] = (r >= 0 && r < rows) ? x[(long long)r * cols + e % cols] : 0.0f;
  }
}
EMU_EXPORT(gather_rows_f32)

// dx[index[i], :] += dout[i, :]. Equal indices must be adjacent (e.g. sorted): the first element of a run
// of equal indices adds the whole run in order, the others do nothing, so no two threads write the same
// element and the sum order is the CPU op's. Out-of-range indices are skipped.
extern "C" __global__ void gather_rows_backward_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                                    const int* __restrict__ index, long long n, int rows, int cols) {
  GRID_STRIDE(e, n * cols) {
    const long long i = e / cols;
    const int c = (int)(e % cols), r = index[i];
    if (r < 0 || r >= rows || (i > 0 && index[i - 1] == r)) continue;
    const long long o = (long long)r * cols + c;
    float v = dx[o];
    for (long long j = i; j < n && index[j] == r; ++j) v += dout[j * cols + c];
    dx[o] = v;
  }
}
EMU_EXPORT(gather_rows_backward_f32)

// ---- squared error ------------------------------------------------------------------------------

// Pass 1 of sum((a - b)^2) (b null: sum a^2): block k writes the sum of its grid-stride share to
// partials[k]. Pass 2 (column_sum_f32 of kernels/reduce.cu) adds the partials in index order.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
    squared_error_partials_f32(float* __restrict__ partials, const float* __restrict__ a,
                               const float* __restrict__ b, long long n) {
  __shared__ float scratch[32];
  float s = 0.0f;
  GRID_STRIDE(i, n) {
    const float d = b != nullptr ? a[i] - b[i] : a[i];
    s += d * d;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
EMU_EXPORT(squared_error_partials_f32)

// da += scale * (a - b)  (b null: da += scale * a)
extern "C" __global__ void squared_error_backward_f32(float* __restrict__ da, const float* __restrict__ a,
                                                      const float* __restrict__ b, float scale, long long n) {
  GRID_STRIDE(i, n) {
    const float d = b != nullptr ? a[i] - b[i] : a[i];
    da[i] += scale * d;
  }
}
EMU_EXPORT(squared_error_backward_f32)
