// MERT/HuBERT codebook NCE loss, f32. Contract of src/ops/nce_loss.rs: pred [N, K*D] (codebook k uses
// columns k*D..(k+1)*D), codewords [K*C, D], targets [N, K] in 0..C; logit[n,k,c] = cos(pred_k[n], E_k[c]) / T
// with both norms clamped at 1e-8; loss[n*K+k] = lse - logit[target].
//
// Forward: one block per (32-row tile, codebook), 8 warps x 4 rows. The rows are normalised into shared
// memory once; the block then streams the C codewords of its codebook through shared memory in tiles of
// 32 (scaled by the inverse norms of nce_codeword_inv_norms_f32), lane j computes the logits of codeword j
// for its warp's 4 rows and keeps an online log-sum-exp; lanes merge at the end. lse is saved for backward.
// Backward: the same row loop recomputes the logits, forms g = dloss/T (softmax - onehot), accumulates
// ga = sum_c g_c b^_c per row in shared memory (dpred) and stores g in a [K, N, C] scratch; a second kernel,
// one block per (32-codeword tile, codebook), sums gb = sum_n g[n,c] a^_n over the rows in a fixed order.
// Trick: with d cos/da = (b^ - cos a^)/|a|, the rank-1 term sum_c g_c cos_c equals ga . a^ (and
// sum_n g cos = gb . b^), so no cosine is ever stored. No float atomics: each output has one writer.
#include "common.cuh"

#define NCE_WARPS 8
#define NCE_ROWS_PER_WARP 4
#define NCE_ROWS (NCE_WARPS * NCE_ROWS_PER_WARP)  // rows per block
#define NCE_TILE 32                                // codewords per shared tile, one per lane
#define NCE_NORM_EPS 1e-8f                         // fairseq's cosine clamps each norm here
#define NCE_LOWEST (-3.402823466e38f)              // -FLT_MAX: start of the running maxima

__device__ __forceinline__ float nce_warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
  return v;
}

__device__ __forceinline__ int nce_thread_id() { return threadIdx.y * 32 + threadIdx.x; }

// 1 / max(|x|, eps) from |x|^2. rsqrtf instead of a division: an IEEE division is a called subroutine
// whose saved registers show up as spills.
__device__ __forceinline__ float nce_inv_norm(float sum_sq) {
  return fminf(rsqrtf(sum_sq), 1.0f / NCE_NORM_EPS);
}

// Warp collective: dst[0..D) = src / max(|src|, eps) (zeros when !ok); returns 1 / max(|src|, eps).
__device__ __forceinline__ float nce_load_unit_row(float* dst, const float* __restrict__ src, bool ok, int D) {
  const int lane = threadIdx.x;
  float ss = 0.0f;
  if (ok)
    for (int t = lane; t < D; t += 32) ss += src[t] * src[t];
  const float inv = nce_inv_norm(warp_sum(ss));
  for (int t = lane; t < D; t += 32) dst[t] = ok ? src[t] * inv : 0.0f;
  return inv;
}

// Block collective (no barrier inside): b_s[j][0..D) (row stride D + 1, so lane j's row reads hit
// distinct banks) = unit codeword c0 + j of codebook k, zeros past C.
__device__ __forceinline__ void nce_stage_codewords(float* b_s, const float* __restrict__ codewords,
                                                    const float* __restrict__ cw_inv_norms, int k, int c0,
                                                    int C, int D) {
  for (int e = nce_thread_id(); e < NCE_TILE * D; e += 32 * NCE_WARPS) {
    const int j = e / D, t = e % D, c = c0 + j;
    const long long cw = (long long)k * C + c;
    b_s[j * (D + 1) + t] = c < C ? codewords[cw * D + t] * cw_inv_norms[cw] : 0.0f;
  }
}

// dot[r] = a_s[r] . b for the warp's NCE_ROWS_PER_WARP rows (a_s row-major [rows][D]).
__device__ __forceinline__ void nce_dots(float* dot, const float* a_s, const float* b, int D) {
  for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) dot[r] = 0.0f;
  for (int t = 0; t < D; ++t) {
    const float bt = b[t];
    for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) dot[r] += a_s[r * D + t] * bt;
  }
}

// inv_norms[i] = 1 / max(|codewords[i]|, eps) for the K*C codeword rows; grid ceil(rows / 8), block (32, 8).
extern "C" __global__ void __launch_bounds__(32 * NCE_WARPS)
    nce_codeword_inv_norms_f32(float* __restrict__ inv_norms, const float* __restrict__ codewords, int rows,
                               int D) {
  const int row = blockIdx.x * NCE_WARPS + threadIdx.y;
  if (row >= rows) return;  // whole warps leave together; only warp collectives below
  const float* src = codewords + (long long)row * D;
  float ss = 0.0f;
  for (int t = threadIdx.x; t < D; t += 32) ss += src[t] * src[t];
  const float inv = nce_inv_norm(warp_sum(ss));
  if (threadIdx.x == 0) inv_norms[row] = inv;
}
EMU_EXPORT(nce_codeword_inv_norms_f32)

// grid (ceil(N / 32), K), block (32, 8), dynamic shared (32 D + 32 (D + 1)) floats.
// Overwrites loss, correct (1 when the target's logit is the maximum) and lse, each [N*K].
extern "C" __global__ void __launch_bounds__(32 * NCE_WARPS)
    nce_loss_forward_f32(float* __restrict__ loss, int* __restrict__ correct, float* __restrict__ lse,
                         const float* __restrict__ pred, const float* __restrict__ codewords,
                         const float* __restrict__ cw_inv_norms, const int* __restrict__ targets, int N, int K, int C,
                         int D, float inv_t) {
  DYNAMIC_SHARED(float, smem);
  const int lane = threadIdx.x, w = threadIdx.y, k = blockIdx.y;
  float* a_s = smem + w * NCE_ROWS_PER_WARP * D;  // this warp's unit rows [4][D]
  float* b_s = smem + NCE_ROWS * D;               // [NCE_TILE][D + 1]
  const int row0 = blockIdx.x * NCE_ROWS + w * NCE_ROWS_PER_WARP;

  int y[NCE_ROWS_PER_WARP];
  float m[NCE_ROWS_PER_WARP], s[NCE_ROWS_PER_WARP], tgt[NCE_ROWS_PER_WARP];
  for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
    const int n = row0 + r;
    const bool ok = n < N;
    nce_load_unit_row(a_s + r * D, pred + (long long)n * K * D + (long long)k * D, ok, D);
    y[r] = ok ? targets[(long long)n * K + k] : -1;
    m[r] = NCE_LOWEST, s[r] = 0.0f, tgt[r] = NCE_LOWEST;
  }
  for (int c0 = 0; c0 < C; c0 += NCE_TILE) {
    __syncthreads();  // everyone is done with the previous tile (and a_s is written before the first)
    nce_stage_codewords(b_s, codewords, cw_inv_norms, k, c0, C, D);
    __syncthreads();
    const int c = c0 + lane;
    if (c < C) {
      float v[NCE_ROWS_PER_WARP];
      nce_dots(v, a_s, b_s + lane * (D + 1), D);
      for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
        const float x = v[r] * inv_t;
        if (x > m[r]) {
          s[r] = s[r] * expf(m[r] - x) + 1.0f;
          m[r] = x;
        } else {
          s[r] += expf(x - m[r]);
        }
        if (c == y[r]) tgt[r] = x;
      }
    }
  }
  for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
    const float mx = nce_warp_max(m[r]);
    const float sum = warp_sum(s[r] * expf(m[r] - mx));
    const float target_logit = nce_warp_max(tgt[r]);
    const int n = row0 + r;
    if (lane == 0 && n < N) {
      const long long i = (long long)n * K + k;
      const float l = mx + logf(sum);
      lse[i] = l;
      loss[i] = l - target_logit;
      correct[i] = target_logit >= mx ? 1 : 0;
    }
  }
}
EMU_EXPORT(nce_loss_forward_f32)

// grid (ceil(N / 32), K), block (32, 8), dynamic shared (2 * 32 D + 32 * 32 + 32 (D + 1)) floats.
// g = dloss/T (exp(logit - lse) - onehot(target)). dpred (if non-null) += (ga - (ga . a^) a^) / |a| with
// ga = sum_c g_c b^_c; g_out (if non-null) [K, N, C] = g for the codeword kernel.
extern "C" __global__ void __launch_bounds__(32 * NCE_WARPS)
    nce_loss_backward_rows_f32(float* __restrict__ dpred, float* __restrict__ g_out,
                               const float* __restrict__ pred, const float* __restrict__ codewords,
                               const float* __restrict__ cw_inv_norms, const int* __restrict__ targets,
                               const float* __restrict__ lse, int N, int K, int C, int D, float inv_t,
                               float dloss) {
  DYNAMIC_SHARED(float, smem);
  const int lane = threadIdx.x, w = threadIdx.y, k = blockIdx.y;
  float* a_s = smem + w * NCE_ROWS_PER_WARP * D;                   // [4][D] unit rows
  float* ga_s = smem + NCE_ROWS * D + w * NCE_ROWS_PER_WARP * D;   // [4][D] running ga
  float* g_s = smem + 2 * NCE_ROWS * D + w * NCE_ROWS_PER_WARP * NCE_TILE;  // [4][NCE_TILE]
  float* b_s = smem + 2 * NCE_ROWS * D + NCE_ROWS * NCE_TILE;      // [NCE_TILE][D + 1]
  const int row0 = blockIdx.x * NCE_ROWS + w * NCE_ROWS_PER_WARP;
  const float scale = dloss * inv_t;

  int y[NCE_ROWS_PER_WARP];
  float row_lse[NCE_ROWS_PER_WARP], inv_norm[NCE_ROWS_PER_WARP];
  for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
    const int n = row0 + r;
    const bool ok = n < N;
    inv_norm[r] = nce_load_unit_row(a_s + r * D, pred + (long long)n * K * D + (long long)k * D, ok, D);
    for (int t = lane; t < D; t += 32) ga_s[r * D + t] = 0.0f;
    y[r] = ok ? targets[(long long)n * K + k] : -1;
    row_lse[r] = ok ? lse[(long long)n * K + k] : 0.0f;
  }
  for (int c0 = 0; c0 < C; c0 += NCE_TILE) {
    __syncthreads();  // previous tile (b_s, g_s) fully read
    nce_stage_codewords(b_s, codewords, cw_inv_norms, k, c0, C, D);
    __syncthreads();
    const int c = c0 + lane;
    float v[NCE_ROWS_PER_WARP];
    nce_dots(v, a_s, b_s + lane * (D + 1), D);
    for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
      const int n = row0 + r;
      float g = 0.0f;
      if (c < C && n < N) {
        const float p = expf(v[r] * inv_t - row_lse[r]) - (c == y[r] ? 1.0f : 0.0f);
        g = scale * p;
        if (g_out != nullptr) g_out[((long long)k * N + n) * C + c] = g;
      }
      g_s[r * NCE_TILE + lane] = g;
    }
    __syncwarp();
    if (dpred != nullptr) {
      // Lane t owns columns t, t + 32, ... of ga: the tile's 32 codewords weighted by g.
      for (int r = 0; r < NCE_ROWS_PER_WARP; ++r)
        for (int t = lane; t < D; t += 32) {
          float acc = ga_s[r * D + t];
          for (int j = 0; j < NCE_TILE; ++j) acc += g_s[r * NCE_TILE + j] * b_s[j * (D + 1) + t];
          ga_s[r * D + t] = acc;
        }
    }
  }
  if (dpred == nullptr) return;  // after the last barrier
  __syncwarp();
  for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
    const int n = row0 + r;
    float ga_dot_a = 0.0f;
    for (int t = lane; t < D; t += 32) ga_dot_a += ga_s[r * D + t] * a_s[r * D + t];
    ga_dot_a = warp_sum(ga_dot_a);
    if (n < N) {
      float* dst = dpred + (long long)n * K * D + (long long)k * D;
      for (int t = lane; t < D; t += 32) dst[t] += (ga_s[r * D + t] - ga_dot_a * a_s[r * D + t]) * inv_norm[r];
    }
  }
}
EMU_EXPORT(nce_loss_backward_rows_f32)

// grid (ceil(C / 32), K), block (32, 8), dynamic shared (32 D + 32 D + 32 * 32) floats.
// dcodewords[k*C + c] += (gb - (gb . b^) b^) / |b| with gb = sum_n g[k, n, c] a^_n, rows summed in order.
extern "C" __global__ void __launch_bounds__(32 * NCE_WARPS)
    nce_loss_backward_codewords_f32(float* __restrict__ dcodewords, const float* __restrict__ g,
                                    const float* __restrict__ pred, const float* __restrict__ codewords,
                                    const float* __restrict__ cw_inv_norms, int N, int K, int C, int D) {
  DYNAMIC_SHARED(float, smem);
  const int lane = threadIdx.x, w = threadIdx.y, k = blockIdx.y, c0 = blockIdx.x * NCE_TILE;
  float* gb_s = smem;                          // [NCE_TILE][D] running gb
  float* a_s = smem + NCE_TILE * D;            // [NCE_ROWS][D] unit rows of the current row tile
  float* g_s = smem + NCE_TILE * D + NCE_ROWS * D;  // [NCE_ROWS][NCE_TILE]
  const int tid = nce_thread_id();
  for (int e = tid; e < NCE_TILE * D; e += 32 * NCE_WARPS) gb_s[e] = 0.0f;
  for (int n0 = 0; n0 < N; n0 += NCE_ROWS) {
    __syncthreads();  // previous row tile fully read
    for (int r = 0; r < NCE_ROWS_PER_WARP; ++r) {
      const int rr = w * NCE_ROWS_PER_WARP + r, n = n0 + rr;
      nce_load_unit_row(a_s + rr * D, pred + (long long)n * K * D + (long long)k * D, n < N, D);
    }
    for (int e = tid; e < NCE_ROWS * NCE_TILE; e += 32 * NCE_WARPS) {
      const int rr = e / NCE_TILE, j = e % NCE_TILE, n = n0 + rr, c = c0 + j;
      g_s[e] = (n < N && c < C) ? g[((long long)k * N + n) * C + c] : 0.0f;
    }
    __syncthreads();
    for (int e = tid; e < NCE_TILE * D; e += 32 * NCE_WARPS) {
      const int j = e / D, t = e % D;
      float acc = gb_s[e];
      for (int rr = 0; rr < NCE_ROWS; ++rr) acc += g_s[rr * NCE_TILE + j] * a_s[rr * D + t];
      gb_s[e] = acc;
    }
  }
  __syncthreads();
  // Warp w finishes codewords w, w + 8, ... of the tile (the condition is uniform across the warp).
  for (int j = w; j < NCE_TILE; j += NCE_WARPS) {
    const int c = c0 + j;
    if (c >= C) break;
    const long long cw = (long long)k * C + c;
    const float inv = cw_inv_norms[cw];
    const float* b = codewords + cw * D;
    float gb_dot_b = 0.0f;
    for (int t = lane; t < D; t += 32) gb_dot_b += gb_s[j * D + t] * (b[t] * inv);
    gb_dot_b = warp_sum(gb_dot_b);
    float* dst = dcodewords + cw * D;
    for (int t = lane; t < D; t += 32) dst[t] += (gb_s[j * D + t] - gb_dot_b * (b[t] * inv)) * inv;
  }
}
EMU_EXPORT(nce_loss_backward_codewords_f32)
