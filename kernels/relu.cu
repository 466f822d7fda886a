// ReLU: y = max(x, 0), forward and backward (gradient 0 at x = 0, as torch's). Grid-stride loops.
#include "common.cuh"

extern "C" __global__ void relu_forward_f32(float* __restrict__ out, const float* __restrict__ x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i];
    out[i] = v > 0.0f ? v : 0.0f;
  }
}
EMU_EXPORT(relu_forward_f32)

// dx += dout where x > 0
extern "C" __global__ void relu_backward_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                             const float* __restrict__ x, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    if (x[i] > 0.0f) dx[i] += dout[i];
  }
}
EMU_EXPORT(relu_backward_f32)
