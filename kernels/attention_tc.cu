// Fused multi-head attention on tensor cores: q, k, v as bf16/f16 bits [B, T, H*64] (head h = columns
// h*64..h*64+63), f32 accumulation, f32 online softmax, out f32 [B, T, H*64], lse f32 [B, H, T]. Same
// contract as kernels/attention.cu / src/ops/attention.rs: S = scale Q Kᵀ, masked keys get probability 0,
// lse = log Σ exp(S) over valid keys; a query row with no valid key gets out = 0 and lse = -inf.
// Optional probability dropout with the same counter hash (keep of (b, h, i, j) = dropout_keep(seed,
// ((b*H + h)*T + i)*T + j, p)); lse is the undropped normaliser.
//
// Forward (FlashAttention-2 layout): one warp per 16 query rows, 4 warps per block (64 queries), key
// tiles of 64 in shared memory. Per tile a warp computes S (16x64) = Q Kᵀ as 4 (d) x 8 (key) mma
// m16n8k16 with its Q fragments held in registers for the whole loop, then the online softmax on the
// accumulators: lane (g = lane/4, t = lane%4) holds rows g and g+8, columns 8j + 2t, 8j + 2t + 1, so a
// row's max/sum is its 16 values plus two xor-shuffles over the quad. The trick: the m16n8 accumulator
// layout of S tiles 2kk and 2kk+1 is exactly the m16k16 A-fragment layout of P for keys 16kk..16kk+15,
// so P goes from registers, rounded to half, straight into O += P V with no shared-memory round trip.
// V is stored transposed (Vt[d][key]) so that B fragments (k = key pairs) are single 32-bit loads.
// No T x T matrix reaches global memory. Backward: see the section header below (dq and dk/dv kernels,
// all four products on mma). The dkv kernel uses 46 KiB of static shared memory and ~245 registers
// (sm_80/sm_90, no spills): adding live state there will spill.
#include "common.cuh"
#include "mma.cuh"

#define ATC_D 64         // head dim (the only one supported; the launcher rejects others)
#define ATC_BLOCK_Q 64   // queries per block: 4 warps x 16 rows
#define ATC_TILE_K 64    // keys per shared tile
#define ATC_WARPS 4
#define ATC_LD 72        // shared row stride in halves: 36 words, so 8 rows x 4 words hit 32 banks
#ifdef CULTUREMERT_EMU
#define ATC_UNROLL
#else
#define ATC_UNROLL _Pragma("unroll")
#endif

__device__ __forceinline__ float atc_neg_inf() { return __int_as_float(0xff800000); }

// Two floats as one fragment register of half bits (lower column index in the low half).
template <bool BF16>
__device__ __forceinline__ unsigned atc_pack(float lo, float hi) {
  return (unsigned)f32_to_half_bits<BF16>(lo) | ((unsigned)f32_to_half_bits<BF16>(hi) << 16);
}

__device__ __forceinline__ unsigned atc_pair(const unsigned short* S, int row, int col) {
  return *reinterpret_cast<const unsigned*>(S + row * ATC_LD + col);
}

// Stores 8 consecutive d (d..d+7) of tile row r into S[r][d..] (transposed: S[d..][r]).
__device__ __forceinline__ void atc_store8(unsigned short* __restrict__ S, int r, int d, const unsigned short e[8],
                                           bool transposed) {
  if (transposed) {
    for (int i = 0; i < 8; ++i) S[(d + i) * ATC_LD + r] = e[i];
  } else {
    for (int i = 0; i < 8; ++i) S[r * ATC_LD + d + i] = e[i];
  }
}

// Chunk c of a tile load: row r, columns d..d+7. Row-major order (a warp reads 4 whole 128-byte rows)
// for the plain layout; for the transposed one the lanes of a warp take 32 rows of one column chunk,
// so that their 2-byte stores S[d + i][r] fall in 16 distinct banks instead of all in one.
__device__ __forceinline__ void atc_chunk(int c, bool transposed, int& r, int& d) {
  if (transposed) {
    r = c % ATC_TILE_K, d = (c / ATC_TILE_K) * 8;
  } else {
    r = c / (ATC_D / 8), d = (c % (ATC_D / 8)) * 8;
  }
}

// Rows t0..t0+63 of head h (batch b) of half bits G into S[r][d] (transposed: S[d][r]); zeros past T.
__device__ __forceinline__ void atc_load_tile(unsigned short* __restrict__ S, const unsigned short* __restrict__ G,
                                              int b, int h, int t0, int T, int H, bool transposed) {
  const long long width = (long long)H * ATC_D;
  const bool aligned = (reinterpret_cast<unsigned long long>(G) & 15) == 0;
  for (int c = threadIdx.x; c < ATC_TILE_K * (ATC_D / 8); c += 32 * ATC_WARPS) {
    int r, d;
    atc_chunk(c, transposed, r, d);
    const int t = t0 + r;
    const unsigned short* src = G + ((long long)b * T + t) * width + (long long)h * ATC_D + d;
    unsigned short e[8];
    if (t < T && aligned) {
      const uint4 v = *reinterpret_cast<const uint4*>(src);
      const unsigned w[4] = {v.x, v.y, v.z, v.w};
      for (int i = 0; i < 4; ++i) e[2 * i] = (unsigned short)(w[i] & 0xffffu), e[2 * i + 1] = (unsigned short)(w[i] >> 16);
    } else {
      for (int i = 0; i < 8; ++i) e[i] = t < T ? src[i] : (unsigned short)0;
    }
    atc_store8(S, r, d, e, transposed);
  }
}

// The same from an f32 tensor (dO), rounded to half on the way in.
template <bool BF16>
__device__ __forceinline__ void atc_load_tile_f32(unsigned short* __restrict__ S, const float* __restrict__ G, int b,
                                                  int h, int t0, int T, int H, bool transposed) {
  const long long width = (long long)H * ATC_D;
  for (int c = threadIdx.x; c < ATC_TILE_K * (ATC_D / 8); c += 32 * ATC_WARPS) {
    int r, d;
    atc_chunk(c, transposed, r, d);
    const int t = t0 + r;
    const float* src = G + ((long long)b * T + t) * width + (long long)h * ATC_D + d;
    unsigned short e[8];
    for (int i = 0; i < 8; ++i) e[i] = t < T ? f32_to_half_bits<BF16>(src[i]) : (unsigned short)0;
    atc_store8(S, r, d, e, transposed);
  }
}

// A fragments (4 k16 steps over d) of the 16 rows row0.. of head h; rows past T are zero. Half bits,
// or f32 rounded to half (F32 = true).
template <bool BF16, bool F32, typename Src>
__device__ __forceinline__ void atc_load_a(unsigned a[4][4], const Src* __restrict__ G, int b, int h, int row0, int T,
                                           int H) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  ATC_UNROLL
  for (int ks = 0; ks < 4; ++ks) {
    ATC_UNROLL
    for (int r = 0; r < 4; ++r) {
      const int i = row0 + g + 8 * (r % 2), d = 16 * ks + 2 * t + 8 * (r / 2);
      const Src* p = G + ((long long)b * T + i) * H * ATC_D + (long long)h * ATC_D + d;
      if (F32) {
        a[ks][r] = i < T ? atc_pack<BF16>((float)p[0], (float)p[1]) : 0u;
      } else {
        a[ks][r] = i < T ? (unsigned)p[0] | ((unsigned)p[1] << 16) : 0u;
      }
    }
  }
}

// A fragments of rows row0..row0+15 of a shared tile S[row][d].
__device__ __forceinline__ void atc_load_a_shared(unsigned a[4][4], const unsigned short* S, int row0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  ATC_UNROLL
  for (int ks = 0; ks < 4; ++ks)
    ATC_UNROLL
    for (int r = 0; r < 4; ++r) a[ks][r] = atc_pair(S, row0 + g + 8 * (r % 2), 16 * ks + 2 * t + 8 * (r / 2));
}

// acc (16 x 64, acc[j][e]: row g + 8(e/2), column 8j + 2t + e%2) += A (fragments over d) · Bsᵀ, with Bs[n][d]
// in shared memory.
template <bool BF16>
__device__ __forceinline__ void atc_mma_rows(float acc[8][4], const unsigned a[4][4], const unsigned short* Bs) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  ATC_UNROLL
  for (int ks = 0; ks < 4; ++ks) {
    ATC_UNROLL
    for (int j = 0; j < 8; ++j) {
      const unsigned bf[2] = {atc_pair(Bs, 8 * j + g, 16 * ks + 2 * t), atc_pair(Bs, 8 * j + g, 16 * ks + 2 * t + 8)};
      mma_m16n8k16<BF16>(acc[j], a[ks], bf);
    }
  }
}

// acc (16 x 64 over d) += X · B where X (16 x 64 over keys) is in accumulator layout and B[key][d] is
// stored transposed in shared memory, Bt[d][key]. The accumulators of X's n8 tiles 2kk, 2kk+1 are
// exactly the A fragment of keys 16kk..16kk+15 (FlashAttention-2): X is rounded to half in registers.
template <bool BF16>
__device__ __forceinline__ void atc_mma_acc_a(float acc[8][4], const float x[8][4], const unsigned short* Bt) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  ATC_UNROLL
  for (int kk = 0; kk < 4; ++kk) {
    const unsigned xa[4] = {atc_pack<BF16>(x[2 * kk][0], x[2 * kk][1]), atc_pack<BF16>(x[2 * kk][2], x[2 * kk][3]),
                            atc_pack<BF16>(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                            atc_pack<BF16>(x[2 * kk + 1][2], x[2 * kk + 1][3])};
    ATC_UNROLL
    for (int n = 0; n < 8; ++n) {
      const unsigned bf[2] = {atc_pair(Bt, 8 * n + g, 16 * kk + 2 * t), atc_pair(Bt, 8 * n + g, 16 * kk + 2 * t + 8)};
      mma_m16n8k16<BF16>(acc[n], xa, bf);
    }
  }
}

__device__ __forceinline__ void atc_zero(float x[8][4]) {
  ATC_UNROLL
  for (int j = 0; j < 8; ++j)
    ATC_UNROLL
    for (int e = 0; e < 4; ++e) x[j][e] = 0.0f;
}

// dst[row][d] += mul acc for the 16 rows row0.. of head h below T (accumulator layout over d).
__device__ __forceinline__ void atc_add_rows(float* __restrict__ dst, const float acc[8][4], float mul, int b, int h,
                                             int row0, int T, int H) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  ATC_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + g + 8 * r;
    if (i >= T) continue;
    float* p = dst + ((long long)b * T + i) * H * ATC_D + (long long)h * ATC_D;
    ATC_UNROLL
    for (int n = 0; n < 8; ++n) {
      p[8 * n + 2 * t] += mul * acc[n][2 * r];
      p[8 * n + 2 * t + 1] += mul * acc[n][2 * r + 1];
    }
  }
}

__device__ __forceinline__ bool atc_key_valid(const unsigned char* __restrict__ key_valid, int b, int T, int j) {
  return j < T && (key_valid == nullptr || key_valid[(long long)b * T + j] != 0);
}

// grid (ceil(T / 64), B * H), block 128. out, lse overwritten.
template <bool BF16>
__device__ __forceinline__ void attention_tc_forward(float* __restrict__ out, float* __restrict__ lse,
                                                     const unsigned short* __restrict__ q,
                                                     const unsigned short* __restrict__ k,
                                                     const unsigned short* __restrict__ v,
                                                     const unsigned char* __restrict__ key_valid, int T, int H,
                                                     float scale, float drop_p, float drop_scale,
                                                     unsigned long long seed) {
  __shared__ __align__(16) unsigned short Ks[ATC_TILE_K * ATC_LD];  // Ks[key][d]
  __shared__ __align__(16) unsigned short Vt[ATC_D * ATC_LD];       // Vt[d][key]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int row0 = blockIdx.x * ATC_BLOCK_Q + warp * 16;  // this warp's first query
  const long long width = (long long)H * ATC_D;

  unsigned qa[4][4];  // Q fragments over d, loaded once (rows past T are zero)
  atc_load_a<BF16, false>(qa, q, b, h, row0, T, H);
  // Online softmax state of rows g (index 0) and g+8 (index 1): m = running max, l = this lane's
  // partial Σ exp(s - m) (the quad sum is taken once at the end), o = running Σ exp(s - m) v.
  float m[2] = {atc_neg_inf(), atc_neg_inf()}, l[2] = {0.0f, 0.0f};
  float o[8][4];
  atc_zero(o);
  for (int t0 = 0; t0 < T; t0 += ATC_TILE_K) {
    __syncthreads();  // the previous tile is consumed
    atc_load_tile(Ks, k, b, h, t0, T, H, false);
    atc_load_tile(Vt, v, b, h, t0, T, H, true);
    __syncthreads();
    // s[j][e]: row g + 8(e/2), key t0 + 8j + 2t + e%2.
    float s[8][4];
    atc_zero(s);
    atc_mma_rows<BF16>(s, qa, Ks);
    float tile_max[2] = {atc_neg_inf(), atc_neg_inf()};
    ATC_UNROLL
    for (int j = 0; j < 8; ++j) {
      ATC_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool valid = atc_key_valid(key_valid, b, T, t0 + 8 * j + 2 * t + e % 2);
        s[j][e] = valid ? s[j][e] * scale : atc_neg_inf();
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
    }
    float corr[2], m_use[2];
    ATC_UNROLL
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(FULL_MASK, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(FULL_MASK, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      // No valid key yet: exponentiate against 0 so that exp(-inf - 0) = 0 (never -inf - -inf).
      m_use[r] = m_new == atc_neg_inf() ? 0.0f : m_new;
      corr[r] = __expf(m[r] - m_use[r]);  // 0 on the first valid tile (m = -inf)
      m[r] = m_new;
      l[r] *= corr[r];
    }
    ATC_UNROLL
    for (int n = 0; n < 8; ++n)
      ATC_UNROLL
      for (int e = 0; e < 4; ++e) o[n][e] *= corr[e / 2];
    ATC_UNROLL
    for (int j = 0; j < 8; ++j) {
      ATC_UNROLL
      for (int e = 0; e < 4; ++e) {
        const float p = __expf(s[j][e] - m_use[e / 2]);  // masked: exp(-inf) = 0
        l[e / 2] += p;  // the normaliser sums the undropped f32 p
        if (drop_p != 0.0f) {
          const int i = row0 + g + 8 * (e / 2), jk = t0 + 8 * j + 2 * t + e % 2;
          const bool keep = dropout_keep(seed, ((unsigned long long)bh * T + i) * T + jk, drop_p);
          s[j][e] = keep ? p * drop_scale : 0.0f;
        } else {
          s[j][e] = p;
        }
      }
    }
    atc_mma_acc_a<BF16>(o, s, Vt);  // O += P V, P straight from the S accumulators
  }

  ATC_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
    l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
  }
  ATC_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + g + 8 * r;
    if (i >= T) continue;  // after the last barrier and the last shuffle
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* dst = out + ((long long)b * T + i) * width + (long long)h * ATC_D;
    ATC_UNROLL
    for (int n = 0; n < 8; ++n) {
      dst[8 * n + 2 * t] = o[n][2 * r] * inv;
      dst[8 * n + 2 * t + 1] = o[n][2 * r + 1] * inv;
    }
    if (t == 0) lse[(long long)bh * T + i] = l[r] > 0.0f ? m[r] + __logf(l[r]) : atc_neg_inf();
  }
}

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_forward_bf16(float* __restrict__ out, float* __restrict__ lse, const unsigned short* __restrict__ q,
                              const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
                              const unsigned char* __restrict__ key_valid, int T, int H, float scale, float drop_p,
                              float drop_scale, unsigned long long seed) {
  attention_tc_forward<true>(out, lse, q, k, v, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_forward_bf16)

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_forward_f16(float* __restrict__ out, float* __restrict__ lse, const unsigned short* __restrict__ q,
                             const unsigned short* __restrict__ k, const unsigned short* __restrict__ v,
                             const unsigned char* __restrict__ key_valid, int T, int H, float scale, float drop_p,
                             float drop_scale, unsigned long long seed) {
  attention_tc_forward<false>(out, lse, q, k, v, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_forward_f16)

// ---- backward --------------------------------------------------------------------------------------
// P = exp(S - lse) is recomputed per tile (0 for masked keys and rows with lse = -inf); with keep mask
// M, c = drop_scale and δ_i = rowsum(dO ∘ O) (attention_backward_delta_f32 of kernels/attention.cu):
//   dP = M c (dO Vᵀ), dS = P (dP - δ), dV = (P M c)ᵀ dO, dQ = scale dS K, dK = scale dSᵀ Q.
// All four products run on mma with half operands (dO, P and dS rounded to half in registers, as P
// in the forward), f32 accumulation. Two kernels so that every output element has one writer (no
// atomics, deterministic): dq loops over key tiles per 16 query rows, dkv over query tiles per 16 keys.

// dS and P M c of one accumulator element; s and dp are the raw S (unscaled) and dO·V values.
__device__ __forceinline__ void atc_ds(float& s_to_pd, float& dp_to_ds, bool live, float scale, float lse_i,
                                       float delta_i, bool keep, float drop_scale) {
  const float p = live ? __expf(s_to_pd * scale - lse_i) : 0.0f;
  const float dp = keep ? dp_to_ds * drop_scale : 0.0f;
  dp_to_ds = p * (dp - delta_i);
  s_to_pd = keep ? p * drop_scale : 0.0f;
}

// dq += scale dS K. grid (ceil(T / 64), B * H), block 128.
template <bool BF16>
__device__ __forceinline__ void attention_tc_backward_dq(float* __restrict__ dq, const float* __restrict__ dout,
                                                         const unsigned short* __restrict__ q,
                                                         const unsigned short* __restrict__ k,
                                                         const unsigned short* __restrict__ v,
                                                         const float* __restrict__ lse, const float* __restrict__ delta,
                                                         const unsigned char* __restrict__ key_valid, int T, int H,
                                                         float scale, float drop_p, float drop_scale,
                                                         unsigned long long seed) {
  __shared__ __align__(16) unsigned short Ks[ATC_TILE_K * ATC_LD];  // Ks[key][d]
  __shared__ __align__(16) unsigned short Vs[ATC_TILE_K * ATC_LD];  // Vs[key][d]
  __shared__ __align__(16) unsigned short Kt[ATC_D * ATC_LD];       // Kt[d][key]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int row0 = blockIdx.x * ATC_BLOCK_Q + warp * 16;
  unsigned qa[4][4], da[4][4];  // Q and dO (rounded) fragments, loaded once
  atc_load_a<BF16, false>(qa, q, b, h, row0, T, H);
  atc_load_a<BF16, true>(da, dout, b, h, row0, T, H);
  float lse_r[2], delta_r[2];
  ATC_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row0 + g + 8 * r;
    lse_r[r] = i < T ? lse[(long long)bh * T + i] : atc_neg_inf();
    delta_r[r] = i < T ? delta[(long long)bh * T + i] : 0.0f;
  }
  float acc[8][4];
  atc_zero(acc);
  for (int t0 = 0; t0 < T; t0 += ATC_TILE_K) {
    __syncthreads();
    atc_load_tile(Ks, k, b, h, t0, T, H, false);
    atc_load_tile(Vs, v, b, h, t0, T, H, false);
    atc_load_tile(Kt, k, b, h, t0, T, H, true);
    __syncthreads();
    float s[8][4], dp[8][4];
    atc_zero(s);
    atc_zero(dp);
    atc_mma_rows<BF16>(s, qa, Ks);
    atc_mma_rows<BF16>(dp, da, Vs);
    ATC_UNROLL
    for (int j = 0; j < 8; ++j) {
      ATC_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2, i = row0 + g + 8 * r, jk = t0 + 8 * j + 2 * t + e % 2;
        const bool live = lse_r[r] != atc_neg_inf() && atc_key_valid(key_valid, b, T, jk);
        const bool keep = drop_p == 0.0f || dropout_keep(seed, ((unsigned long long)bh * T + i) * T + jk, drop_p);
        atc_ds(s[j][e], dp[j][e], live, scale, lse_r[r], delta_r[r], keep, drop_scale);
      }
    }
    atc_mma_acc_a<BF16>(acc, dp, Kt);  // dS (accumulator layout) · K
  }
  atc_add_rows(dq, acc, scale, b, h, row0, T, H);
}

// dv += (P M c)ᵀ dO, dk += scale dSᵀ Q; one warp per 16 keys, tiles of 64 queries.
// grid (ceil(T / 64), B * H), block 128.
template <bool BF16>
__device__ __forceinline__ void attention_tc_backward_dkv(float* __restrict__ dk, float* __restrict__ dv,
                                                          const float* __restrict__ dout,
                                                          const unsigned short* __restrict__ q,
                                                          const unsigned short* __restrict__ k,
                                                          const unsigned short* __restrict__ v,
                                                          const float* __restrict__ lse,
                                                          const float* __restrict__ delta,
                                                          const unsigned char* __restrict__ key_valid, int T, int H,
                                                          float scale, float drop_p, float drop_scale,
                                                          unsigned long long seed) {
  __shared__ __align__(16) unsigned short Qs[ATC_TILE_K * ATC_LD];   // Qs[query][d]
  __shared__ __align__(16) unsigned short dOs[ATC_TILE_K * ATC_LD];  // dOs[query][d]
  __shared__ __align__(16) unsigned short Qt[ATC_D * ATC_LD];        // Qt[d][query]
  __shared__ __align__(16) unsigned short dOt[ATC_D * ATC_LD];       // dOt[d][query]
  __shared__ __align__(16) unsigned short Vb[ATC_TILE_K * ATC_LD];   // this block's V rows [key][d]
  __shared__ float lse_s[ATC_TILE_K], delta_s[ATC_TILE_K];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int key0 = blockIdx.x * ATC_BLOCK_Q + warp * 16;
  // K fragments of this warp's 16 keys stay in registers; V's are re-read from shared memory per tile
  // (holding both costs 32 more registers and spilled on sm_80).
  unsigned ka[4][4];
  atc_load_a<BF16, false>(ka, k, b, h, key0, T, H);
  atc_load_tile(Vb, v, b, h, blockIdx.x * ATC_BLOCK_Q, T, H, false);  // visible after the first barrier
  const bool key_ok[2] = {atc_key_valid(key_valid, b, T, key0 + g), atc_key_valid(key_valid, b, T, key0 + g + 8)};
  float dk_acc[8][4], dv_acc[8][4];
  atc_zero(dk_acc);
  atc_zero(dv_acc);
  for (int i0 = 0; i0 < T; i0 += ATC_TILE_K) {
    __syncthreads();
    atc_load_tile(Qs, q, b, h, i0, T, H, false);
    atc_load_tile(Qt, q, b, h, i0, T, H, true);
    atc_load_tile_f32<BF16>(dOs, dout, b, h, i0, T, H, false);
    atc_load_tile_f32<BF16>(dOt, dout, b, h, i0, T, H, true);
    if (threadIdx.x < ATC_TILE_K) {
      const int i = i0 + threadIdx.x;
      lse_s[threadIdx.x] = i < T ? lse[(long long)bh * T + i] : atc_neg_inf();
      delta_s[threadIdx.x] = i < T ? delta[(long long)bh * T + i] : 0.0f;
    }
    __syncthreads();
    // Transposed scores: st[j][e] = S[query i0 + 8j + 2t + e%2][key key0 + g + 8(e/2)].
    float st[8][4], dpt[8][4];
    atc_zero(st);
    atc_zero(dpt);
    atc_mma_rows<BF16>(st, ka, Qs);
    {
      unsigned va[4][4];
      atc_load_a_shared(va, Vb, warp * 16);
      atc_mma_rows<BF16>(dpt, va, dOs);
    }
    ATC_UNROLL
    for (int j = 0; j < 8; ++j) {
      ATC_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int il = 8 * j + 2 * t + e % 2, i = i0 + il, jk = key0 + g + 8 * (e / 2);
        const float lse_i = lse_s[il];
        const bool live = key_ok[e / 2] && lse_i != atc_neg_inf();
        const bool keep = drop_p == 0.0f || dropout_keep(seed, ((unsigned long long)bh * T + i) * T + jk, drop_p);
        atc_ds(st[j][e], dpt[j][e], live, scale, lse_i, delta_s[il], keep, drop_scale);
      }
    }
    atc_mma_acc_a<BF16>(dv_acc, st, dOt);  // (P M c)ᵀ · dO
    atc_mma_acc_a<BF16>(dk_acc, dpt, Qt);  // dSᵀ · Q
  }
  atc_add_rows(dv, dv_acc, 1.0f, b, h, key0, T, H);
  atc_add_rows(dk, dk_acc, scale, b, h, key0, T, H);
}

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_backward_dq_bf16(float* __restrict__ dq, const float* __restrict__ dout,
                                  const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                  const unsigned short* __restrict__ v, const float* __restrict__ lse,
                                  const float* __restrict__ delta, const unsigned char* __restrict__ key_valid, int T,
                                  int H, float scale, float drop_p, float drop_scale, unsigned long long seed) {
  attention_tc_backward_dq<true>(dq, dout, q, k, v, lse, delta, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_backward_dq_bf16)

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_backward_dkv_bf16(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                                   const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                   const unsigned short* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ delta, const unsigned char* __restrict__ key_valid,
                                   int T, int H, float scale, float drop_p, float drop_scale, unsigned long long seed) {
  attention_tc_backward_dkv<true>(dk, dv, dout, q, k, v, lse, delta, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_backward_dkv_bf16)

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_backward_dq_f16(float* __restrict__ dq, const float* __restrict__ dout,
                                  const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                  const unsigned short* __restrict__ v, const float* __restrict__ lse,
                                  const float* __restrict__ delta, const unsigned char* __restrict__ key_valid, int T,
                                  int H, float scale, float drop_p, float drop_scale, unsigned long long seed) {
  attention_tc_backward_dq<false>(dq, dout, q, k, v, lse, delta, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_backward_dq_f16)

extern "C" __global__ void __launch_bounds__(32 * ATC_WARPS)
    attention_tc_backward_dkv_f16(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                                   const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
                                   const unsigned short* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ delta, const unsigned char* __restrict__ key_valid,
                                   int T, int H, float scale, float drop_p, float drop_scale, unsigned long long seed) {
  attention_tc_backward_dkv<false>(dk, dv, dout, q, k, v, lse, delta, key_valid, T, H, scale, drop_p, drop_scale, seed);
}
EMU_EXPORT(attention_tc_backward_dkv_f16)
