// LayerNorm over the last dim of x [rows, cols]: out = (x - mean) * rstd * weight + bias.
// Forward and dx: one warp per row (blockDim = (32, ROWS_PER_BLOCK)), two passes over the row for a
// stable variance. dweight/dbias: one thread per column summing over rows in a fixed order, so the
// result is deterministic without atomics.
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

// dweight[c] += sum_rows dout * xhat ; dbias[c] += sum_rows dout. Either pointer may be null.
extern "C" __global__ void layer_norm_backward_params_f32(float* __restrict__ dweight, float* __restrict__ dbias,
                                                          const float* __restrict__ dout, const float* __restrict__ x,
                                                          const float* __restrict__ mean, const float* __restrict__ rstd,
                                                          int rows, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float sw = 0.0f, sb = 0.0f;
  for (int row = 0; row < rows; ++row) {
    const long long i = (long long)row * cols + c;
    sw += dout[i] * (x[i] - mean[row]) * rstd[row];
    sb += dout[i];
  }
  if (dweight != nullptr) dweight[c] += sw;
  if (dbias != nullptr) dbias[c] += sb;
}
EMU_EXPORT(layer_norm_backward_params_f32)
