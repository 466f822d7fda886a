// nn.Conv1d, f32, no im2col buffer: x [B, Cin, Lin], weight [Cout, Cin/G, K], bias [Cout],
// out [B, Cout, Lout], zero padding on both sides, stride, groups (contract of src/ops/conv1d.rs).
// Forward and dweight are implicit-im2col GEMMs per group: the im2col matrix
//   col[j = c*K + k][r = b*Lout + t] = x[b, g*cin_g + c, t*stride + k - pad]   (0 outside [0, Lin))
// is never stored; tiles of it are gathered straight from x into shared memory.
//   forward:  out_g [cout_g, B*Lout]      = W_g [cout_g, cin_g*K] . col            (+ bias)
//   dweight:  dW_g  [cout_g, cin_g*K]    += dout_g [cout_g, B*Lout] . col^T
// Both use the tiling of kernels/gemm.cu: a 64x64 output tile per 256-thread block, 16-deep shared
// tiles, each thread a 4x4 register tile strided by 16, summed in a fixed order (deterministic).
// dx is the same kind of GEMM with M = cin_g, N = B*Lin split by stride phase, reduction over the
// (co, k) that can hit, its second operand gathered from dout; for few channels per group (the waveform layer) one thread per input element
// is cheaper. dbias: one block per channel with a fixed-order block sum. Backward accumulates.
// dweight and dbias reduce over all B*Lout positions; a launch that would not fill the GPU splits that
// reduction into S chunks (grid dimension), writes S partial results to a workspace and adds them in
// chunk order with sum_partials_f32 (kernels/reduce.cu): deterministic, no atomics. Few taps per group
// (cin_g*K <= 16, the waveform layer) take a bandwidth-bound kernel of their own.
#include "common.cuh"

#define THREADS 256
#define TILE 64
#define TILE_K 16
// Row pitch of the shared tiles: stores with the reduction index fastest (16 threads, rows 66 apart)
// then hit 32 distinct banks.
#define PITCH (TILE + 2)

// The 4x4 register tile update from one 16-deep pair of shared tiles As[r][m], Bs[r][n].
__device__ __forceinline__ void tile_fma(float (*acc)[4], const float (*As)[PITCH], const float (*Bs)[PITCH],
                                         int tx, int ty) {
  for (int r = 0; r < TILE_K; ++r) {
    float a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = As[r][ty + 16 * i];
    for (int j = 0; j < 4; ++j) b[j] = Bs[r][tx + 16 * j];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
  }
}

// out[b, g*cout_g + m, t] for m in a 64-row tile of cout_g and n = b*Lout + t in a 64-column tile of
// B*Lout. grid (ceil(B*Lout / 64), ceil(cout_g / 64), G), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_forward_f32(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ weight,
                       const float* __restrict__ bias, int B, int Cin, int Cout, int Lin, int Lout, int K,
                       int stride, int pad, int G) {
  __shared__ float Ws[TILE_K][PITCH];  // [j][m]
  __shared__ float Xs[TILE_K][PITCH];  // [j][n]
  const int cin_g = Cin / G, cout_g = Cout / G, g = blockIdx.z;
  const int R = cin_g * K, N = B * Lout;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
  const float* wg = weight + (long long)g * cout_g * R;
  // Loads: weight with j fastest (rows of W are contiguous), col with n fastest (consecutive t). The
  // col column of this thread is fixed for the whole reduction, so its (b, t) is divided out once.
  const int wj = tid % TILE_K, wm = tid / TILE_K;
  const int xn = tid % TILE, xj = tid / TILE, gn = n0 + xn;
  const bool n_ok = gn < N;
  const int xb = n_ok ? gn / Lout : 0, tin0 = (gn - xb * Lout) * stride - pad;
  const float* xg = x + ((long long)xb * Cin + (long long)g * cin_g) * Lin;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int j0 = 0; j0 < R; j0 += TILE_K) {
    for (int i = 0; i < 4; ++i) {
      const int m = wm + 16 * i, gm = m0 + m, gj = j0 + wj;
      Ws[wj][m] = gm < cout_g && gj < R ? wg[(long long)gm * R + gj] : 0.0f;
    }
    for (int i = 0; i < 4; ++i) {
      const int j = xj + 4 * i, gj = j0 + j;
      float v = 0.0f;
      if (n_ok && gj < R) {
        const int c = gj / K, s = tin0 + gj - c * K;
        if (s >= 0 && s < Lin) v = xg[(long long)c * Lin + s];
      }
      Xs[j][xn] = v;
    }
    __syncthreads();
    tile_fma(acc, Ws, Xs, tx, ty);
    __syncthreads();
  }

  for (int j = 0; j < 4; ++j) {
    const int n = n0 + tx + 16 * j;
    if (n >= N) continue;
    const int b = n / Lout, t = n - b * Lout;
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + ty + 16 * i;
      if (m >= cout_g) continue;
      const int co = g * cout_g + m;
      out[((long long)b * Cout + co) * Lout + t] = bias != nullptr ? acc[i][j] + bias[co] : acc[i][j];
    }
  }
}
EMU_EXPORT(conv1d_forward_f32)

// dx[b, ci, s] += Σ_{co in group, k : s + pad - k = t * stride, 0 <= t < Lout} W[co, c, k] dout[b, co, t].
// Direct version for small cin_g. Grid-stride over dx [B, Cin, Lin].
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

// dx[b, g*cin_g + m, s] += Σ_{co, k} W[g*cout_g + co, m, k] dout[b, g*cout_g + co, t] over the taps with
// s + pad - k = t*stride, 0 <= t < Lout. Only taps k ≡ s + pad (mod stride) can hit, so the columns are
// split by that phase q: block x covers phase q = blockIdx.x % stride, whose columns n = (b, i) are the
// positions s = s_q + i*stride, and reduces over j = (co, kk) with k = q + kk*stride (no wasted taps).
// A GEMM with M = cin_g, its second operand gathered from dout. For cin_g >= 16; grid
// (stride * ceil(B*ceil(Lin/stride) / 64), ceil(cin_g / 64), G), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dx_gemm_f32(float* __restrict__ dx, const float* __restrict__ dout,
                                const float* __restrict__ weight, int B, int Cin, int Cout, int Lin, int Lout,
                                int K, int stride, int pad, int G) {
  __shared__ float Ws[TILE_K][PITCH];  // [j][m]
  __shared__ float Ds[TILE_K][PITCH];  // [j][n]
  const int cin_g = Cin / G, cout_g = Cout / G, g = blockIdx.z;
  const int q = blockIdx.x % stride;
  const int Kq = q < K ? (K - q + stride - 1) / stride : 0;      // taps of this phase
  const int s_q = ((q - pad) % stride + stride) % stride;         // first s with (s + pad) % stride == q
  const int Lq = s_q < Lin ? (Lin - s_q + stride - 1) / stride : 0;  // positions of this phase per item
  const int R = cout_g * Kq, N = B * Lq;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * TILE, n0 = (blockIdx.x / stride) * TILE;
  const float* wg = weight + (long long)g * cout_g * cin_g * K;
  // Weight loads with j fastest (one (co, kk) per thread and step); dout loads with n fastest, the
  // thread's column (b, i) fixed for the whole reduction: t = v - kk.
  const int wj = tid % TILE_K, wm = tid / TILE_K;
  const int dn = tid % TILE, dj = tid / TILE, gn = n0 + dn;
  const bool n_ok = gn < N;
  const int db = n_ok ? gn / Lq : 0, v = (s_q + pad - q) / stride + (gn - db * Lq);
  const float* dg = dout + ((long long)db * Cout + (long long)g * cout_g) * Lout;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  const int steps_end = n0 < N ? R : 0;  // tiles past this phase's columns skip the reduction
  for (int j0 = 0; j0 < steps_end; j0 += TILE_K) {
    {
      const int gj = j0 + wj, co = gj / Kq, k = q + (gj - co * Kq) * stride;
      const float* wrow = wg + (long long)co * cin_g * K + k;
      for (int i = 0; i < 4; ++i) {
        const int m = wm + 16 * i, gm = m0 + m;
        Ws[wj][m] = gm < cin_g && gj < R ? wrow[(long long)gm * K] : 0.0f;
      }
    }
    for (int i = 0; i < 4; ++i) {
      const int j = dj + 4 * i, gj = j0 + j;
      float val = 0.0f;
      if (n_ok && gj < R) {
        const int co = gj / Kq, t = v - (gj - co * Kq);
        if (t >= 0 && t < Lout) val = dg[(long long)co * Lout + t];
      }
      Ds[j][dn] = val;
    }
    __syncthreads();
    tile_fma(acc, Ws, Ds, tx, ty);
    __syncthreads();
  }

  for (int j = 0; j < 4; ++j) {
    const int n = n0 + tx + 16 * j;
    if (n >= N) continue;
    const int b = n / Lq, s = s_q + (n - b * Lq) * stride;
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + ty + 16 * i;
      if (m < cin_g) dx[((long long)b * Cin + g * cin_g + m) * Lin + s] += acc[i][j];
    }
  }
}
EMU_EXPORT(conv1d_backward_dx_gemm_f32)

// dweight[g*cout_g + m, j = c*K + k] += Σ_{r = b*Lout + t} dout[b, g*cout_g + m, t] col[j][r].
// Split reduction: block z = s*G + g reduces r in [s*chunk, min(R, (s+1)*chunk)). With partials
// (S > 1 chunks) it stores its tile to partials[s] ([Cout, cin_g*K]) and sum_partials_f32 adds the S
// tiles in order; without (S == 1) it accumulates straight into dweight.
// grid (ceil(cin_g*K / 64), ceil(cout_g / 64), G * S), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dweight_f32(float* __restrict__ dweight, float* __restrict__ partials,
                                const float* __restrict__ dout, const float* __restrict__ x, int B, int Cin,
                                int Cout, int Lin, int Lout, int K, int stride, int pad, int G, int chunk) {
  __shared__ float Ds[TILE_K][PITCH];  // [r][m]
  __shared__ float Xs[TILE_K][PITCH];  // [r][n]
  const int cin_g = Cin / G, cout_g = Cout / G, g = blockIdx.z % G, split = blockIdx.z / G;
  const int NW = cin_g * K, R = B * Lout;
  const int r_begin = split * chunk, r_end = min(R, r_begin + chunk);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
  // Both operands load with r fastest (consecutive t: contiguous in dout, stride apart in x), so a
  // thread's r, and its (b, t), is one per step; its 4 rows m and columns j = (c, k) are fixed.
  const int lr = tid % TILE_K, lrow = tid / TILE_K;
  long long dofs[4];  // dout offset of row m at t = 0 of batch 0 (-1: outside the tile)
  int xofs[4], xk[4];  // x channel offset c*Lin within the group, tap k - pad (xofs -1: outside)
  for (int i = 0; i < 4; ++i) {
    const int gm = m0 + lrow + 16 * i, gj = n0 + lrow + 16 * i;
    dofs[i] = gm < cout_g ? (long long)(g * cout_g + gm) * Lout : -1;
    const int c = gj / K;
    xofs[i] = gj < NW ? c * Lin : -1;
    xk[i] = gj - c * K - pad;
  }
  const float* xg = x + (long long)g * cin_g * Lin;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int r0 = r_begin; r0 < r_end; r0 += TILE_K) {
    const int r = r0 + lr;
    const bool r_ok = r < r_end;
    const int b = r_ok ? r / Lout : 0, t = r - b * Lout;
    const float* db = dout + (long long)b * Cout * Lout + t;
    const float* xb = xg + (long long)b * Cin * Lin;
    for (int i = 0; i < 4; ++i) {
      Ds[lr][lrow + 16 * i] = r_ok && dofs[i] >= 0 ? db[dofs[i]] : 0.0f;
      const int s = t * stride + xk[i];
      Xs[lr][lrow + 16 * i] = r_ok && xofs[i] >= 0 && s >= 0 && s < Lin ? xb[xofs[i] + s] : 0.0f;
    }
    __syncthreads();
    tile_fma(acc, Ds, Xs, tx, ty);
    __syncthreads();
  }

  float* dst = partials != nullptr ? partials + (long long)split * Cout * NW : dweight;
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= cout_g) continue;
    float* row = dst + (long long)(g * cout_g + m) * NW;
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n < NW) row[n] = partials != nullptr ? acc[i][j] : row[n] + acc[i][j];
    }
  }
}
EMU_EXPORT(conv1d_backward_dweight_f32)

// Small-im2col dweight (cin_g*K <= SW_MAX, e.g. the waveform layer: 1 channel x 10 taps). There the
// GEMM tile above wastes 54 of 64 columns; this is a bandwidth-bound reduction over dout instead.
// Block (32, 8): lane = position, warp = SW_CH output channels, so a block covers 8*SW_CH channels of
// one group and its chunk of r = b*Lout + t (split as in the tiled kernel, grid.y = chunk index s).
// Each step gathers the im2col tile of SW_POS positions once into shared memory (all taps of all
// channels of the group: batch boundaries and padding handled by the gather) and every warp reuses it
// for its channels; dout is read coalesced (32 consecutive t per warp) straight into registers.
// Offsets are 32-bit (the launcher checks that x and dout have < 2^31 elements). Registers: the
// accumulators (SW_CH x SW_MAX) plus the in-flight dout values; capped at 128 for 2 blocks per SM.
// grid (ceil(cout_g / (8*SW_CH)), S, G), block (32, 8).
#define SW_MAX 16                             // largest cin_g*K
#define SW_CH 2                               // output channels per thread
#define SW_PER_LANE 4                         // positions per lane and step
#define SW_POS (32 * SW_PER_LANE)             // positions per step
#define SW_GATHER (SW_MAX * SW_POS / THREADS)  // tile entries gathered per thread and step
extern "C" __global__ void __launch_bounds__(THREADS, 2)
    conv1d_backward_dweight_small_f32(float* __restrict__ dweight, float* __restrict__ partials,
                                      const float* __restrict__ dout, const float* __restrict__ x, int B,
                                      int Cin, int Cout, int Lin, int Lout, int K, int stride, int pad, int G,
                                      int chunk) {
  __shared__ float cols[SW_MAX][SW_POS];  // cols[j][p] = col[j][r0 + p]
  const int cin_g = Cin / G, cout_g = Cout / G, g = blockIdx.z, split = blockIdx.y;
  const int NW = cin_g * K, R = B * Lout;
  const int r_begin = split * chunk, r_end = min(R, r_begin + chunk);
  const int lane = threadIdx.x, tid = threadIdx.y * 32 + lane;
  const int co0 = blockIdx.x * (8 * SW_CH) + threadIdx.y * SW_CH;  // this thread's first channel
  const int nco = min(SW_CH, cout_g - co0);                          // its valid channels (may be <= 0)
  const float* dg = dout + (long long)(g * cout_g + max(min(co0, cout_g - 1), 0)) * Lout;
  // Gather: thread tid fills cols[j][p] for p = tid % SW_POS and j = tid / SW_POS + (THREADS / SW_POS) i,
  // so its position is fixed; the x offsets c*Lin + k - pad of its taps are computed once.
  const int gp = tid % SW_POS, gj0 = tid / SW_POS;
  int gofs[SW_GATHER];
#pragma unroll
  for (int i = 0; i < SW_GATHER; ++i) {
    const int j = gj0 + (THREADS / SW_POS) * i, c = j / K;
    gofs[i] = c * Lin + j - c * K - pad;
  }
  const float* xg = x + (long long)g * cin_g * Lin;
  // (b, t) of the gather position and of the lane's positions, advanced by SW_POS per step
  // (no division in the loop).
  const int b0 = r_begin / Lout, t0 = r_begin - b0 * Lout;
  int gb = b0, gt = t0 + gp;
  while (gt >= Lout) gt -= Lout, ++gb;
  int pb[SW_PER_LANE], pt[SW_PER_LANE];
#pragma unroll
  for (int i = 0; i < SW_PER_LANE; ++i) {
    pb[i] = b0, pt[i] = t0 + lane + 32 * i;
    while (pt[i] >= Lout) pt[i] -= Lout, ++pb[i];
  }
  float acc[SW_CH][SW_MAX];
#pragma unroll
  for (int c = 0; c < SW_CH; ++c)
#pragma unroll
    for (int j = 0; j < SW_MAX; ++j) acc[c][j] = 0.0f;

  for (int r0 = r_begin; r0 < r_end; r0 += SW_POS) {
    float dv[SW_CH][SW_PER_LANE];  // issued first: in flight while the tile is gathered
#pragma unroll
    for (int i = 0; i < SW_PER_LANE; ++i) {
      const bool ok = r0 + lane + 32 * i < r_end;
      const int o = ok ? pb[i] * Cout * Lout + pt[i] : 0;
#pragma unroll
      for (int c = 0; c < SW_CH; ++c) dv[c][i] = ok && c < nco ? dg[o + c * Lout] : 0.0f;
    }
    const bool g_ok = r0 + gp < r_end;
    const int xo = g_ok ? gb * Cin * Lin + gt * stride : 0;
#pragma unroll
    for (int i = 0; i < SW_GATHER; ++i) {
      const int j = gj0 + (THREADS / SW_POS) * i;
      const int s = gofs[i] - (j / K) * Lin + gt * stride;  // t*stride + k - pad
      cols[j][gp] = g_ok && j < NW && s >= 0 && s < Lin ? xg[xo + gofs[i]] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < SW_PER_LANE; ++i) {
#pragma unroll
      for (int j = 0; j < SW_MAX; ++j) {
        const float xv = cols[j][lane + 32 * i];  // lanes read consecutive p: no bank conflict
#pragma unroll
        for (int c = 0; c < SW_CH; ++c) acc[c][j] += dv[c][i] * xv;
      }
    }
    __syncthreads();
    for (gt += SW_POS; gt >= Lout;) gt -= Lout, ++gb;
#pragma unroll
    for (int i = 0; i < SW_PER_LANE; ++i)
      for (pt[i] += SW_POS; pt[i] >= Lout;) pt[i] -= Lout, ++pb[i];
  }

  // Lanes hold partial sums over their positions: butterfly over the warp (fixed order), lane 0 writes.
  float* dst = partials != nullptr ? partials + (long long)split * Cout * NW : dweight;
  dst += (long long)(g * cout_g + co0) * NW;
#pragma unroll
  for (int c = 0; c < SW_CH; ++c) {
#pragma unroll
    for (int j = 0; j < SW_MAX; ++j) {
      const float v = warp_sum(acc[c][j]);
      if (lane == 0 && c < nco && j < NW) dst[c * NW + j] = partials != nullptr ? v : dst[c * NW + j] + v;
    }
  }
}
EMU_EXPORT(conv1d_backward_dweight_small_f32)

// dbias[co] += Σ_{b, t} dout[b, co, t] over r = b*Lout + t in this block's chunk [s*chunk, ...): one
// block per (channel, chunk), a fixed-order block sum; with partials (S > 1 chunks) the block stores
// partials[s*Cout + co] instead (summed in order by sum_partials_f32). grid (Cout, S), block THREADS.
extern "C" __global__ void __launch_bounds__(THREADS)
    conv1d_backward_dbias_f32(float* __restrict__ dbias, float* __restrict__ partials,
                              const float* __restrict__ dout, int B, int Cout, int Lout, int chunk) {
  __shared__ float scratch[32];
  const int co = blockIdx.x, split = blockIdx.y;
  const int r_begin = split * chunk, r_end = min(B * Lout, r_begin + chunk);
  // (b, t) of r advanced by blockDim.x per step: no division in the loop.
  int r = r_begin + threadIdx.x, b = r / Lout, t = r - b * Lout;
  float acc = 0.0f;
  for (; r < r_end; r += blockDim.x) {
    acc += dout[((long long)b * Cout + co) * Lout + t];
    for (t += blockDim.x; t >= Lout;) t -= Lout, ++b;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) {
    if (partials != nullptr)
      partials[(long long)split * Cout + co] = acc;
    else
      dbias[co] += acc;
  }
}
EMU_EXPORT(conv1d_backward_dbias_f32)
