// nn.Conv1d, f32, direct (no im2col buffer): x [B, Cin, Lin], weight [Cout, Cin/G, K], bias [Cout],
// out [B, Cout, Lout], zero padding on both sides, stride, groups (contract of src/ops/conv1d.rs).
// Forward and dx: one thread per output element, reducing over the group's channels and taps.
// dweight/dbias: one block per weight (or bias) element reducing over batch and time with a fixed-order
// block sum, so results are deterministic without atomics. Backward accumulates.
#include "common.cuh"

#define THREADS 256

// Grid-stride over out [B, Cout, Lout].
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_forward_f32(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ weight,
                       const float* __restrict__ bias, int B, int Cin, int Cout, int Lin, int Lout, int K,
                       int stride, int pad, int G) {
  const int cin_g = Cin / G, cout_g = Cout / G;
  const long long n = (long long)B * Cout * Lout;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const int t = (int)(e % Lout), co = (int)((e / Lout) % Cout), b = (int)(e / ((long long)Lout * Cout));
    const int g = co / cout_g, tin0 = t * stride - pad;
    // Taps that land inside the input: tin0 + k in [0, Lin).
    const int k0 = tin0 < 0 ? -tin0 : 0, k1 = min(K, Lin - tin0);
    const float* w = weight + (long long)co * cin_g * K;
    const float* xg = x + ((long long)b * Cin + (long long)g * cin_g) * Lin;
    float acc = 0.0f;
    for (int c = 0; c < cin_g; ++c)
      for (int k = k0; k < k1; ++k) acc += w[c * K + k] * xg[(long long)c * Lin + tin0 + k];
    out[e] = bias != nullptr ? acc + bias[co] : acc;
  }
}
EMU_EXPORT(conv1d_forward_f32)

// dx[b, ci, s] += Σ_{co in group, k : s + pad - k = t * stride, 0 <= t < Lout} W[co, c, k] dout[b, co, t].
// Grid-stride over dx [B, Cin, Lin].
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dx_f32(float* __restrict__ dx, const float* __restrict__ dout, const float* __restrict__ weight,
                           int B, int Cin, int Cout, int Lin, int Lout, int K, int stride, int pad, int G) {
  const int cin_g = Cin / G, cout_g = Cout / G;
  const long long n = (long long)B * Cin * Lin;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const int s = (int)(e % Lin), ci = (int)((e / Lin) % Cin), b = (int)(e / ((long long)Lin * Cin));
    const int g = ci / cin_g, c = ci % cin_g;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
      const int num = s + pad - k;
      if (num < 0 || num % stride != 0) continue;
      const int t = num / stride;
      if (t >= Lout) continue;
      const float* dcol = dout + ((long long)b * Cout + (long long)g * cout_g) * Lout + t;
      const float* w = weight + ((long long)g * cout_g * cin_g + c) * K + k;
      for (int co = 0; co < cout_g; ++co) acc += w[(long long)co * cin_g * K] * dcol[(long long)co * Lout];
    }
    dx[e] += acc;
  }
}
EMU_EXPORT(conv1d_backward_dx_f32)

// dweight[co, c, k] += Σ_{b, t} dout[b, co, t] x[b, g*cin_g + c, t*stride + k - pad]: one block per weight.
// grid (Cout * cin_g * K), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dweight_f32(float* __restrict__ dweight, const float* __restrict__ dout,
                                const float* __restrict__ x, int B, int Cin, int Cout, int Lin, int Lout, int K,
                                int stride, int pad, int G) {
  __shared__ float scratch[32];
  const int cin_g = Cin / G, cout_g = Cout / G;
  const int widx = blockIdx.x;
  const int k = widx % K, c = (widx / K) % cin_g, co = widx / (K * cin_g);
  const int ci = (co / cout_g) * cin_g + c;
  float acc = 0.0f;
  for (int e = threadIdx.x; e < B * Lout; e += blockDim.x) {
    const int b = e / Lout, t = e % Lout, s = t * stride + k - pad;
    if (s >= 0 && s < Lin)
      acc += dout[((long long)b * Cout + co) * Lout + t] * x[((long long)b * Cin + ci) * Lin + s];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) dweight[widx] += acc;
}
EMU_EXPORT(conv1d_backward_dweight_f32)

// dbias[co] += Σ_{b, t} dout[b, co, t]: one block per output channel. grid (Cout), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dbias_f32(float* __restrict__ dbias, const float* __restrict__ dout, int B, int Cout, int Lout) {
  __shared__ float scratch[32];
  const int co = blockIdx.x;
  float acc = 0.0f;
  for (int e = threadIdx.x; e < B * Lout; e += blockDim.x)
    acc += dout[((long long)(e / Lout) * Cout + co) * Lout + e % Lout];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) dbias[co] += acc;
}
EMU_EXPORT(conv1d_backward_dbias_f32)
