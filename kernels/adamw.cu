// Fused multi-tensor AdamW step, f32, in torch.optim.AdamW's order (contract of src/train/optim.rs):
//   p *= decay (if weight decay); m = lerp(m, g, w1); v = v*b2 + w2*g*g;
//   p += neg_step_size * m / (sqrt(v) / bc2_sqrt + eps)
// with the per-tensor scalars computed on the host in f64 and rounded once. The _rn intrinsics stop
// the compiler from contracting into FMAs, so the result matches the CPU bit for bit.
// One launch updates every tensor: blockIdx.y picks a descriptor of TABLE_SLOTS u64 in `table`:
//   [0] p  [1] g  [2] m  [3] v  [4] n  [5] decay | w1 << 32  [6] b2 | w2 << 32
//   [7] neg_step_size | bc2_sqrt << 32  [8] eps | apply_decay << 32   (f32 bit patterns)
#include "common.cuh"

#define THREADS 256
#define TABLE_SLOTS 9

__device__ __forceinline__ float adamw_lo(unsigned long long s) { return __uint_as_float((unsigned)(s & 0xffffffffull)); }
__device__ __forceinline__ float adamw_hi(unsigned long long s) { return __uint_as_float((unsigned)(s >> 32)); }

// grid (blocks per tensor, number of tensors), block THREADS; grid-stride within each tensor.
extern "C" __global__ void __launch_bounds__(THREADS) adamw_step_f32(const unsigned long long* __restrict__ table) {
  const unsigned long long* t = table + (long long)blockIdx.y * TABLE_SLOTS;
  float* p = reinterpret_cast<float*>(t[0]);
  const float* g = reinterpret_cast<const float*>(t[1]);
  float* m = reinterpret_cast<float*>(t[2]);
  float* v = reinterpret_cast<float*>(t[3]);
  const long long n = (long long)t[4];
  const float decay = adamw_lo(t[5]), w1 = adamw_hi(t[5]);
  const float b2 = adamw_lo(t[6]), w2 = adamw_hi(t[6]);
  const float neg_step_size = adamw_lo(t[7]), bc2_sqrt = adamw_hi(t[7]);
  const float eps = adamw_lo(t[8]);
  const bool apply_decay = (t[8] >> 32) != 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float w = p[i];
    const float gi = g[i];
    if (apply_decay) w = __fmul_rn(w, decay);
    float mi = m[i];
    // torch lerp: the form depends on whether the weight is below 0.5.
    mi = w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(w1, __fadd_rn(gi, -mi)))
                   : __fadd_rn(gi, -__fmul_rn(__fadd_rn(gi, -mi), 1.0f - w1));
    const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, gi), gi));
    const float denom = __fadd_rn(__fsqrt_rn(vi) / bc2_sqrt, eps);
    p[i] = __fadd_rn(w, __fmul_rn(neg_step_size, mi) / denom);
    m[i] = mi;
    v[i] = vi;
  }
}
EMU_EXPORT(adamw_step_f32)
