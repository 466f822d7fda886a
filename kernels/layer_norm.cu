// LayerNorm over the last dim of x [rows, cols]: out = (x - mean) * rstd * weight + bias.
// Forward and dx: one warp per row (blockDim = (32, ROWS_PER_BLOCK)), two passes over the row for a
// stable variance. dweight/dbias: a two-stage column reduction (blocks of rows x 32 columns write
// per-column partials, sum_partials_f32 in kernels/reduce.cu adds them in order): deterministic
// without atomics.
#include "common.cuh"

extern "C" __global__ void layer_norm_forward_f32(float* __restrict__ out, float* __restrict__ mean,
                                                  float* __restrict__ rstd, const float* __restrict__ x,
                                                  const float* __restrict__ weight, const float* __restrict__ bias,
                                                  int rows, int cols, float eps) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;  // whole warps leave together: no barrier below, only warp collectives
  const int lane = threadIdx.x;
  const float* xr = x + (long long)row * cols;
  float s = 0.0f;
  for (int c = lane; c < cols; c += 32) s += xr[c];
  const float m = warp_sum(s) / cols;
  float ss = 0.0f;
  for (int c = lane; c < cols; c += 32) {
    const float d = xr[c] - m;
    ss += d * d;
  }
  const float r = rsqrtf(warp_sum(ss) / cols + eps);
  float* outr = out + (long long)row * cols;
  for (int c = lane; c < cols; c += 32) outr[c] = (xr[c] - m) * r * weight[c] + bias[c];
  if (lane == 0) mean[row] = m, rstd[row] = r;
}
EMU_EXPORT(layer_norm_forward_f32)

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = dout * weight, xhat = (x - mean) * rstd.
extern "C" __global__ void layer_norm_backward_dx_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                                      const float* __restrict__ x, const float* __restrict__ weight,
                                                      const float* __restrict__ mean, const float* __restrict__ rstd,
                                                      int rows, int cols) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const int lane = threadIdx.x;
  const long long off = (long long)row * cols;
  const float m = mean[row], r = rstd[row];
  float sg = 0.0f, sgx = 0.0f;
  for (int c = lane; c < cols; c += 32) {
    const float g = dout[off + c] * weight[c];
    sg += g;
    sgx += g * (x[off + c] - m) * r;
  }
  const float mg = warp_sum(sg) / cols, mgx = warp_sum(sgx) / cols;
  for (int c = lane; c < cols; c += 32) {
    const float g = dout[off + c] * weight[c];
    const float xhat = (x[off + c] - m) * r;
    dx[off + c] += r * (g - mg - xhat * mgx);
  }
}
EMU_EXPORT(layer_norm_backward_dx_f32)

// dweight[c] += Σ_rows dout * xhat ; dbias[c] += Σ_rows dout (either pointer may be null), stage 1.
// Block (32, PARAM_WARPS) owns 32 consecutive columns (lane = column: coalesced 128-byte row segments)
// and the rows [s*chunk, min(rows, (s+1)*chunk)) of chunk s = blockIdx.y; warp w takes rows w,
// w + PARAM_WARPS, ... (two rows' loads issued before their adds), then the warp sums are added in warp
// order. With partials (S = gridDim.y > 1 chunks) the block stores partials[s*cols + c] (dweight) and
// partials[(S + s)*cols + c] (dbias) for sum_partials_f32; otherwise it accumulates into the outputs.
// grid (ceil(cols / 32), S), block (32, PARAM_WARPS).
#define PARAM_WARPS 8
extern "C" __global__ void __launch_bounds__(32 * PARAM_WARPS)
    layer_norm_backward_params_f32(float* __restrict__ dweight, float* __restrict__ dbias,
                                   float* __restrict__ partials, const float* __restrict__ dout,
                                   const float* __restrict__ x, const float* __restrict__ mean,
                                   const float* __restrict__ rstd, int rows, int cols, int chunk) {
  __shared__ float part_w[PARAM_WARPS][32], part_b[PARAM_WARPS][32];
  const int lane = threadIdx.x, w = threadIdx.y, c = blockIdx.x * 32 + lane, split = blockIdx.y;
  const int r_end = min(rows, split * chunk + chunk);
  float sw = 0.0f, sb = 0.0f;
  if (c < cols) {
    int r = split * chunk + w;
    for (; r + PARAM_WARPS < r_end; r += 2 * PARAM_WARPS) {
      const long long i0 = (long long)r * cols + c, i1 = i0 + (long long)PARAM_WARPS * cols;
      const float d0 = dout[i0], x0 = x[i0], d1 = dout[i1], x1 = x[i1];
      sw += d0 * (x0 - mean[r]) * rstd[r];  // same order as one row at a time
      sb += d0;
      sw += d1 * (x1 - mean[r + PARAM_WARPS]) * rstd[r + PARAM_WARPS];
      sb += d1;
    }
    for (; r < r_end; r += PARAM_WARPS) {
      const long long i = (long long)r * cols + c;
      sw += dout[i] * (x[i] - mean[r]) * rstd[r];
      sb += dout[i];
    }
  }
  part_w[w][lane] = sw;
  part_b[w][lane] = sb;
  __syncthreads();
  if (w == 0 && c < cols) {
    float tw = 0.0f, tb = 0.0f;
    for (int i = 0; i < PARAM_WARPS; ++i) tw += part_w[i][lane], tb += part_b[i][lane];
    if (partials != nullptr) {
      partials[(long long)split * cols + c] = tw;
      partials[((long long)gridDim.y + split) * cols + c] = tb;
    } else {
      if (dweight != nullptr) dweight[c] += tw;
      if (dbias != nullptr) dbias[c] += tb;
    }
  }
}
EMU_EXPORT(layer_norm_backward_params_f32)
