// Fused multi-head attention (flash style), f32, q/k/v/out laid out [B, T, H*D] with head h in columns
// h*D..(h+1)*D, D <= 64 (MERT: 64). Contract of src/ops/attention.rs: S = scale Q Kᵀ, masked keys get
// probability 0, lse [B, H, T] = log Σ exp(S) over valid keys (-inf and out = 0 for a row without one).
//
// One warp per query row (backward dk/dv: per key row), 8 warps per block sharing 32-row tiles of the
// other operand in shared memory. Within a tile, lane j owns key (or query) j for the dot products,
// and lane d owns output columns d and d + 32; probabilities travel between the two roles by shuffles.
// No T x T matrix ever reaches global memory: backward recomputes P = exp(S - lse). dq and dk/dv are
// two kernels (S is recomputed in each) so that every output element has a single writer: no atomics.
#include "common.cuh"

#define MAX_D 64
#define TILE 32            // rows of the shared K/V (or Q/dO) tile
#define WARPS 8            // rows of the block's own operand, one per warp
#define PAD (MAX_D + 1)    // lane j reads row j: the odd stride spreads the rows over all banks

__device__ __forceinline__ float attn_neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float attn_warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
  return v;
}

// dst[r][d] = head h of rows t0 + r of src (batch b); zeros past T and past D (so any lane may read).
__device__ __forceinline__ void attn_load_tile(float (*dst)[PAD], const float* __restrict__ src, int b, int h,
                                               int t0, int T, int H, int D) {
  const int tid = threadIdx.y * 32 + threadIdx.x;
  const long long width = (long long)H * D;
  for (int e = tid; e < TILE * MAX_D; e += 32 * WARPS) {
    const int r = e / MAX_D, d = e % MAX_D, t = t0 + r;
    dst[r][d] = (t < T && d < D) ? src[((long long)b * T + t) * width + (long long)h * D + d] : 0.0f;
  }
}

// One row (this warp's) of head h into dst[MAX_D], zero-padded.
__device__ __forceinline__ void attn_load_row(float* dst, const float* __restrict__ src, bool row_ok,
                                              long long off, int D) {
  for (int d = threadIdx.x; d < MAX_D; d += 32) dst[d] = (row_ok && d < D) ? src[off + d] : 0.0f;
}

__device__ __forceinline__ float attn_dot(const float* a, const float* b, int D) {
  float s = 0.0f;
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

__device__ __forceinline__ bool attn_key_valid(const unsigned char* __restrict__ key_valid, int b, int T, int j) {
  return j < T && (key_valid == nullptr || key_valid[(long long)b * T + j] != 0);
}

// grid (ceil(T / WARPS), B * H), block (32, WARPS). out, lse overwritten.
extern "C" __global__ void __launch_bounds__(32 * WARPS)
    attention_forward_f32(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q,
                          const float* __restrict__ k, const float* __restrict__ v,
                          const unsigned char* __restrict__ key_valid, int T, int H, int D, float scale) {
  __shared__ float Ks[TILE][PAD];
  __shared__ float Vs[TILE][PAD];
  __shared__ float Qs[WARPS][MAX_D];
  const int lane = threadIdx.x, w = threadIdx.y;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int i = blockIdx.x * WARPS + w;
  const bool row_ok = i < T;
  const long long row_off = ((long long)b * T + i) * H * D + (long long)h * D;
  attn_load_row(Qs[w], q, row_ok, row_off, D);
  // Online softmax: m = running max, l = running Σ exp(s - m), acc = running Σ exp(s - m) v.
  float m = attn_neg_inf(), l = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
  for (int t0 = 0; t0 < T; t0 += TILE) {
    __syncthreads();  // the previous tile is consumed (first pass: Qs is visible)
    attn_load_tile(Ks, k, b, h, t0, T, H, D);
    attn_load_tile(Vs, v, b, h, t0, T, H, D);
    __syncthreads();
    const bool valid = attn_key_valid(key_valid, b, T, t0 + lane);
    const float s = valid ? attn_dot(Qs[w], Ks[lane], D) * scale : attn_neg_inf();
    const float m_new = fmaxf(m, attn_warp_max(s));
    if (m_new == attn_neg_inf()) continue;  // warp-uniform: no valid key yet
    const float corr = __expf(m - m_new);   // 0 on the first valid tile (m = -inf)
    const float p = valid ? __expf(s - m_new) : 0.0f;
    l = l * corr + warp_sum(p);
    acc0 *= corr;
    acc1 *= corr;
    for (int jj = 0; jj < TILE; ++jj) {
      const float pj = __shfl_sync(FULL_MASK, p, jj);
      acc0 += pj * Vs[jj][lane];
      acc1 += pj * Vs[jj][lane + 32];
    }
    m = m_new;
  }
  if (!row_ok) return;  // after the last barrier
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  if (lane < D) out[row_off + lane] = acc0 * inv;
  if (lane + 32 < D) out[row_off + lane + 32] = acc1 * inv;
  if (lane == 0) lse[(long long)bh * T + i] = l > 0.0f ? m + __logf(l) : attn_neg_inf();
}
EMU_EXPORT(attention_forward_f32)

// delta[b, h, i] = Σ_d dO[i, d] O[i, d] (the rowsum term of the softmax backward).
// grid (ceil(T / WARPS), B * H), block (32, WARPS).
extern "C" __global__ void __launch_bounds__(32 * WARPS)
    attention_backward_delta_f32(float* __restrict__ delta, const float* __restrict__ dout,
                                 const float* __restrict__ out, int T, int H, int D) {
  const int lane = threadIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  const int i = blockIdx.x * WARPS + threadIdx.y;
  if (i >= T) return;  // whole warps leave: no barrier in this kernel
  const long long off = ((long long)b * T + i) * H * D + (long long)h * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += dout[off + d] * out[off + d];
  s = warp_sum(s);
  if (lane == 0) delta[(long long)bh * T + i] = s;
}
EMU_EXPORT(attention_backward_delta_f32)

// P_ij = exp(S_ij - lse_i) (0 for masked keys and rows without a valid key); dS = P (dO Vᵀ - delta).
// dq += scale dS K. One warp per query row; grid (ceil(T / WARPS), B * H), block (32, WARPS).
extern "C" __global__ void __launch_bounds__(32 * WARPS)
    attention_backward_dq_f32(float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q,
                              const float* __restrict__ k, const float* __restrict__ v,
                              const float* __restrict__ lse, const float* __restrict__ delta,
                              const unsigned char* __restrict__ key_valid, int T, int H, int D, float scale) {
  __shared__ float Ks[TILE][PAD];
  __shared__ float Vs[TILE][PAD];
  __shared__ float Qs[WARPS][MAX_D];
  __shared__ float dOs[WARPS][MAX_D];
  const int lane = threadIdx.x, w = threadIdx.y;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int i = blockIdx.x * WARPS + w;
  const bool row_ok = i < T;
  const long long row_off = ((long long)b * T + i) * H * D + (long long)h * D;
  attn_load_row(Qs[w], q, row_ok, row_off, D);
  attn_load_row(dOs[w], dout, row_ok, row_off, D);
  const float lse_i = row_ok ? lse[(long long)bh * T + i] : attn_neg_inf();
  const float delta_i = row_ok ? delta[(long long)bh * T + i] : 0.0f;
  float acc0 = 0.0f, acc1 = 0.0f;
  for (int t0 = 0; t0 < T; t0 += TILE) {
    __syncthreads();
    attn_load_tile(Ks, k, b, h, t0, T, H, D);
    attn_load_tile(Vs, v, b, h, t0, T, H, D);
    __syncthreads();
    if (lse_i == attn_neg_inf()) continue;  // warp-uniform: the row has no gradient
    const bool valid = attn_key_valid(key_valid, b, T, t0 + lane);
    const float p = valid ? __expf(attn_dot(Qs[w], Ks[lane], D) * scale - lse_i) : 0.0f;
    const float ds = p * (attn_dot(dOs[w], Vs[lane], D) - delta_i);
    for (int jj = 0; jj < TILE; ++jj) {
      const float dsj = __shfl_sync(FULL_MASK, ds, jj);
      acc0 += dsj * Ks[jj][lane];
      acc1 += dsj * Ks[jj][lane + 32];
    }
  }
  if (!row_ok) return;
  if (lane < D) dq[row_off + lane] += scale * acc0;
  if (lane + 32 < D) dq[row_off + lane + 32] += scale * acc1;
}
EMU_EXPORT(attention_backward_dq_f32)

// dv_j += Σ_i P_ij dO_i ; dk_j += scale Σ_i dS_ij Q_i. One warp per key row j, shared tiles of 32
// query rows (Q, dO, lse, delta); grid (ceil(T / WARPS), B * H), block (32, WARPS).
extern "C" __global__ void __launch_bounds__(32 * WARPS)
    attention_backward_dkv_f32(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                               const float* __restrict__ q, const float* __restrict__ k,
                               const float* __restrict__ v, const float* __restrict__ lse,
                               const float* __restrict__ delta, const unsigned char* __restrict__ key_valid, int T,
                               int H, int D, float scale) {
  __shared__ float Qs[TILE][PAD];
  __shared__ float dOs[TILE][PAD];
  __shared__ float lse_s[TILE];
  __shared__ float delta_s[TILE];
  __shared__ float Kw[WARPS][MAX_D];
  __shared__ float Vw[WARPS][MAX_D];
  const int lane = threadIdx.x, w = threadIdx.y;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int j = blockIdx.x * WARPS + w;
  const bool row_ok = j < T;
  const bool key_ok = attn_key_valid(key_valid, b, T, j);  // a masked key gets no gradient
  const long long row_off = ((long long)b * T + j) * H * D + (long long)h * D;
  attn_load_row(Kw[w], k, row_ok, row_off, D);
  attn_load_row(Vw[w], v, row_ok, row_off, D);
  float dk0 = 0.0f, dk1 = 0.0f, dv0 = 0.0f, dv1 = 0.0f;
  for (int t0 = 0; t0 < T; t0 += TILE) {
    __syncthreads();
    attn_load_tile(Qs, q, b, h, t0, T, H, D);
    attn_load_tile(dOs, dout, b, h, t0, T, H, D);
    if (w == 0) {
      const int i = t0 + lane;
      lse_s[lane] = i < T ? lse[(long long)bh * T + i] : attn_neg_inf();
      delta_s[lane] = i < T ? delta[(long long)bh * T + i] : 0.0f;
    }
    __syncthreads();
    if (!key_ok) continue;  // warp-uniform
    const float lse_i = lse_s[lane];
    const float p = lse_i != attn_neg_inf() ? __expf(attn_dot(Qs[lane], Kw[w], D) * scale - lse_i) : 0.0f;
    const float ds = p * (attn_dot(dOs[lane], Vw[w], D) - delta_s[lane]);
    for (int ii = 0; ii < TILE; ++ii) {
      const float pi = __shfl_sync(FULL_MASK, p, ii), dsi = __shfl_sync(FULL_MASK, ds, ii);
      dv0 += pi * dOs[ii][lane];
      dv1 += pi * dOs[ii][lane + 32];
      dk0 += dsi * Qs[ii][lane];
      dk1 += dsi * Qs[ii][lane + 32];
    }
  }
  if (!row_ok) return;
  if (lane < D) dv[row_off + lane] += dv0, dk[row_off + lane] += scale * dk0;
  if (lane + 32 < D) dv[row_off + lane + 32] += dv1, dk[row_off + lane + 32] += scale * dk1;
}
EMU_EXPORT(attention_backward_dkv_f32)
