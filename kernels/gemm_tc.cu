// Mixed-precision tensor-core GEMM: C[M,N] (= or +=) op(A)[M,K] * op(B)[K,N] (+ bias[N]), with A and
// B stored as bf16 or f16 bits (unsigned short) and f32 accumulation (mma.m16n8k16, see mma.cuh).
// A is stored [M,K] row-major, or [K,M] when a_trans; B is [K,N], or [N,K] when b_trans (the same
// contract as gemm.cu: nn.Linear forward is (0,1), dX = dY*W is (0,0), dW = dY^T*X is (1,0)).
// Plus the f32 <-> bf16/f16 cast kernels (round to nearest even).
//
// Tiling: one 64x64 tile of C per 128-thread block (4 warps in 2x2, each 32x32 = 2 m16 x 4 n8 mma
// tiles, 32 f32 accumulators per thread), K in steps of 32 (two k16 mma steps per tile).
// Both operands sit in shared memory k-contiguous (As[m][k], Bs[n][k]) so every fragment register is
// one aligned 32-bit load; rows are padded to 40 halves (20 words) so the 8 rows x 4 words read by
// a fragment load hit 32 different banks. Out-of-range rows/columns/k are zero-filled in the tiles.
#include "common.cuh"
#include "mma.cuh"

#define TC_TILE 64
#define TC_TILE_K 32
#define TC_LD 40  // shared row stride in halves: TC_TILE_K + 8 padding
#define TC_THREADS 128
// Full unrolling keeps acc[][][] in registers under NVRTC (else a 128-byte local-memory frame).
#ifdef CULTUREMERT_EMU
#define TC_UNROLL
#else
#define TC_UNROLL _Pragma("unroll")
#endif

// Fills S[r][k] (r < 64, k < 32, stride TC_LD) with G's rows r0.. and columns k0.. of a logical
// [R,K] matrix, zeros outside it. G is stored [R,K] (k contiguous) when k_contig, else [K,R].
// When G is 16-byte aligned and the contiguous extent a multiple of 8, 8 halves move per load.
__device__ __forceinline__ void tc_load_tile(unsigned short* __restrict__ S, const unsigned short* __restrict__ G,
                                             int R, int K, int r0, int k0, bool k_contig) {
  const int tid = threadIdx.x;
  const bool aligned = (reinterpret_cast<unsigned long long>(G) & 15) == 0;
  if (k_contig && K % 8 == 0 && aligned) {
    for (int c = tid; c < TC_TILE * (TC_TILE_K / 8); c += TC_THREADS) {
      const int r = c / (TC_TILE_K / 8), k = (c % (TC_TILE_K / 8)) * 8;
      const int gr = r0 + r, gk = k0 + k;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (gr < R && gk < K) v = *reinterpret_cast<const uint4*>(G + (long long)gr * K + gk);
      *reinterpret_cast<uint4*>(S + r * TC_LD + k) = v;
    }
  } else if (k_contig) {
    for (int e = tid; e < TC_TILE * TC_TILE_K; e += TC_THREADS) {
      const int r = e / TC_TILE_K, k = e % TC_TILE_K;
      const int gr = r0 + r, gk = k0 + k;
      S[r * TC_LD + k] = (gr < R && gk < K) ? G[(long long)gr * K + gk] : (unsigned short)0;
    }
  } else if (R % 8 == 0 && aligned) {
    // [K,R] storage: load 8 consecutive r at one k, scatter them down a column of S.
    for (int c = tid; c < TC_TILE_K * (TC_TILE / 8); c += TC_THREADS) {
      const int k = c / (TC_TILE / 8), r = (c % (TC_TILE / 8)) * 8;
      const int gr = r0 + r, gk = k0 + k;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (gr < R && gk < K) v = *reinterpret_cast<const uint4*>(G + (long long)gk * R + gr);
      const unsigned w[4] = {v.x, v.y, v.z, v.w};
      for (int j = 0; j < 4; ++j) {
        S[(r + 2 * j) * TC_LD + k] = (unsigned short)(w[j] & 0xffffu);
        S[(r + 2 * j + 1) * TC_LD + k] = (unsigned short)(w[j] >> 16);
      }
    }
  } else {
    for (int e = tid; e < TC_TILE * TC_TILE_K; e += TC_THREADS) {
      const int r = e % TC_TILE, k = e / TC_TILE;
      const int gr = r0 + r, gk = k0 + k;
      S[r * TC_LD + k] = (gr < R && gk < K) ? G[(long long)gk * R + gr] : (unsigned short)0;
    }
  }
}

// Two adjacent halves of a shared tile as one fragment register (lower index in the low half).
__device__ __forceinline__ unsigned tc_pair(const unsigned short* S, int row, int k) {
  return *reinterpret_cast<const unsigned*>(S + row * TC_LD + k);
}

template <bool BF16>
__device__ __forceinline__ void gemm_tc_tile(float* __restrict__ C, const unsigned short* __restrict__ A,
                                             const unsigned short* __restrict__ B,
                                             const float* __restrict__ bias, int M, int N, int K,
                                             int a_trans, int b_trans, int accumulate) {
  __shared__ __align__(16) unsigned short As[TC_TILE * TC_LD];
  __shared__ __align__(16) unsigned short Bs[TC_TILE * TC_LD];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // this warp's 32x32 corner in the tile
  const int row0 = blockIdx.x * TC_TILE, col0 = blockIdx.y * TC_TILE;

  float acc[2][4][4];
  TC_UNROLL
  for (int i = 0; i < 2; ++i)
    TC_UNROLL
    for (int j = 0; j < 4; ++j)
      TC_UNROLL
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += TC_TILE_K) {
    tc_load_tile(As, A, M, K, row0, k0, !a_trans);
    tc_load_tile(Bs, B, N, K, col0, k0, b_trans != 0);  // Bs[n][k]: k-contiguous iff B is [N,K]
    __syncthreads();
    TC_UNROLL
    for (int ks = 0; ks < TC_TILE_K; ks += 16) {
      unsigned a[2][4], b[4][2];
      TC_UNROLL
      for (int i = 0; i < 2; ++i) {
        const int r = wm + 16 * i + g;
        a[i][0] = tc_pair(As, r, ks + 2 * t);
        a[i][1] = tc_pair(As, r + 8, ks + 2 * t);
        a[i][2] = tc_pair(As, r, ks + 2 * t + 8);
        a[i][3] = tc_pair(As, r + 8, ks + 2 * t + 8);
      }
      TC_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int n = wn + 8 * j + g;
        b[j][0] = tc_pair(Bs, n, ks + 2 * t);
        b[j][1] = tc_pair(Bs, n, ks + 2 * t + 8);
      }
      TC_UNROLL
      for (int i = 0; i < 2; ++i)
        TC_UNROLL
        for (int j = 0; j < 4; ++j) mma_m16n8k16<BF16>(acc[i][j], a[i], b[j]);
    }
    __syncthreads();
  }

  // acc[i][j][e] is C[wm + 16i + g + 8(e/2)][wn + 8j + 2t + e%2] of this tile.
  TC_UNROLL
  for (int i = 0; i < 2; ++i) {
    TC_UNROLL
    for (int e2 = 0; e2 < 2; ++e2) {
      const int gm = row0 + wm + 16 * i + g + 8 * e2;
      if (gm >= M) continue;
      TC_UNROLL
      for (int j = 0; j < 4; ++j) {
        TC_UNROLL
        for (int e1 = 0; e1 < 2; ++e1) {
          const int gn = col0 + wn + 8 * j + 2 * t + e1;
          if (gn >= N) continue;
          float v = acc[i][j][2 * e2 + e1];
          if (bias != nullptr) v += bias[gn];
          float* c = C + (long long)gm * N + gn;
          *c = accumulate ? *c + v : v;
        }
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS)
    gemm_tc_bf16(float* __restrict__ C, const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
                 const float* __restrict__ bias, int M, int N, int K, int a_trans, int b_trans, int accumulate) {
  gemm_tc_tile<true>(C, A, B, bias, M, N, K, a_trans, b_trans, accumulate);
}
EMU_EXPORT(gemm_tc_bf16)

extern "C" __global__ void __launch_bounds__(TC_THREADS)
    gemm_tc_f16(float* __restrict__ C, const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
                const float* __restrict__ bias, int M, int N, int K, int a_trans, int b_trans, int accumulate) {
  gemm_tc_tile<false>(C, A, B, bias, M, N, K, a_trans, b_trans, accumulate);
}
EMU_EXPORT(gemm_tc_f16)

// ---- casts (grid-stride loops) ---------------------------------------------------------------------
#define GRID_STRIDE_LOOP(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void cast_f32_to_bf16(unsigned short* __restrict__ out, const float* __restrict__ x, long long n) {
  GRID_STRIDE_LOOP(i, n) out[i] = f32_to_bf16_bits(x[i]);
}
EMU_EXPORT(cast_f32_to_bf16)

extern "C" __global__ void cast_f32_to_f16(unsigned short* __restrict__ out, const float* __restrict__ x, long long n) {
  GRID_STRIDE_LOOP(i, n) out[i] = f32_to_f16_bits(x[i]);
}
EMU_EXPORT(cast_f32_to_f16)

extern "C" __global__ void cast_bf16_to_f32(float* __restrict__ out, const unsigned short* __restrict__ x, long long n) {
  GRID_STRIDE_LOOP(i, n) out[i] = bf16_bits_to_f32(x[i]);
}
EMU_EXPORT(cast_bf16_to_f32)

extern "C" __global__ void cast_f16_to_f32(float* __restrict__ out, const unsigned short* __restrict__ x, long long n) {
  GRID_STRIDE_LOOP(i, n) out[i] = f16_bits_to_f32(x[i]);
}
EMU_EXPORT(cast_f16_to_f32)
