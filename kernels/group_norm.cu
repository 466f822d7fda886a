// nn.GroupNorm on x [B, C, L], f32 (contract of src/ops/group_norm.rs): statistics per (b, group) over
// the (C/G)*L contiguous values of the group (biased variance, two passes for stability), then the
// per-channel affine; mean/rstd [B*G] saved for backward. Forward and dx: one block per (b, group);
// dweight/dbias: one block per channel. Fixed-order block sums: deterministic, no atomics.
#include "common.cuh"

#define THREADS 256

// grid (B*G), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    group_norm_forward_f32(float* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                           const float* __restrict__ x, const float* __restrict__ weight,
                           const float* __restrict__ bias, int C, int L, int G, float eps) {
  __shared__ float scratch[32];
  const int bg = blockIdx.x, cg = C / G, c0 = (bg % G) * cg;
  const long long n = (long long)cg * L, off = (long long)bg * n;
  const float* xg = x + off;
  float s = 0.0f;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) s += xg[e];
  const float m = block_sum(s, scratch) / (float)n;
  float ss = 0.0f;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) {
    const float d = xg[e] - m;
    ss += d * d;
  }
  const float r = rsqrtf(block_sum(ss, scratch) / (float)n + eps);
  for (long long e = threadIdx.x; e < n; e += blockDim.x) {
    const int c = c0 + (int)(e / L);
    out[off + e] = (xg[e] - m) * r * weight[c] + bias[c];
  }
  if (threadIdx.x == 0) mean[bg] = m, rstd[bg] = r;
}
EMU_EXPORT(group_norm_forward_f32)

// dx += rstd (g - mean(g) - xhat mean(g xhat)) over the group, g = dout * weight[c],
// xhat = (x - mean) rstd. grid (B*G), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    group_norm_backward_dx_f32(float* __restrict__ dx, const float* __restrict__ dout, const float* __restrict__ x,
                               const float* __restrict__ weight, const float* __restrict__ mean,
                               const float* __restrict__ rstd, int C, int L, int G) {
  __shared__ float scratch[32];
  const int bg = blockIdx.x, cg = C / G, c0 = (bg % G) * cg;
  const long long n = (long long)cg * L, off = (long long)bg * n;
  const float m = mean[bg], r = rstd[bg];
  float sg = 0.0f, sgx = 0.0f;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) {
    const float g = dout[off + e] * weight[c0 + (int)(e / L)];
    sg += g;
    sgx += g * (x[off + e] - m) * r;
  }
  const float mg = block_sum(sg, scratch) / (float)n;
  const float mgx = block_sum(sgx, scratch) / (float)n;
  for (long long e = threadIdx.x; e < n; e += blockDim.x) {
    const float g = dout[off + e] * weight[c0 + (int)(e / L)];
    dx[off + e] += r * (g - mg - (x[off + e] - m) * r * mgx);
  }
}
EMU_EXPORT(group_norm_backward_dx_f32)

// dweight[c] += Σ_{b,l} dout xhat ; dbias[c] += Σ_{b,l} dout (either may be null).
// grid (C), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    group_norm_backward_params_f32(float* __restrict__ dweight, float* __restrict__ dbias,
                                   const float* __restrict__ dout, const float* __restrict__ x,
                                   const float* __restrict__ mean, const float* __restrict__ rstd, int B, int C,
                                   int L, int G) {
  __shared__ float scratch[32];
  const int c = blockIdx.x, g = c / (C / G);
  float sw = 0.0f, sb = 0.0f;
  for (long long e = threadIdx.x; e < (long long)B * L; e += blockDim.x) {
    const int b = (int)(e / L);
    const long long i = ((long long)b * C + c) * L + e % L;
    const int bg = b * G + g;
    sw += dout[i] * (x[i] - mean[bg]) * rstd[bg];
    sb += dout[i];
  }
  sw = block_sum(sw, scratch);
  sb = block_sum(sb, scratch);
  if (threadIdx.x == 0) {
    if (dweight != nullptr) dweight[c] += sw;
    if (dbias != nullptr) dbias[c] += sb;
  }
}
EMU_EXPORT(group_norm_backward_params_f32)
