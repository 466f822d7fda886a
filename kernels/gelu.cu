// Exact GELU: y = 0.5 x (1 + erf(x / sqrt 2)), forward and backward. Grid-stride loops.
#include "common.cuh"

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

extern "C" __global__ void gelu_forward_f32(float* __restrict__ out, const float* __restrict__ x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i];
    out[i] = 0.5f * v * (1.0f + erff(v * INV_SQRT2));
  }
}
EMU_EXPORT(gelu_forward_f32)

// dx += dout * (Phi(x) + x * phi(x))
extern "C" __global__ void gelu_backward_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                             const float* __restrict__ x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i];
    const float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
    const float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
    dx[i] += dout[i] * (cdf + v * pdf);
  }
}
EMU_EXPORT(gelu_backward_f32)
