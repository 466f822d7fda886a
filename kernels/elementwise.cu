// Elementwise f32 ops. Grid-stride loops over n elements.
#include "common.cuh"

// out = a + b
extern "C" __global__ void add_f32(float* __restrict__ out, const float* __restrict__ a,
                                   const float* __restrict__ b, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}
EMU_EXPORT(add_f32)

// out = alpha * x
extern "C" __global__ void scale_f32(float* __restrict__ out, const float* __restrict__ x, float alpha, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = alpha * x[i];
}
EMU_EXPORT(scale_f32)
