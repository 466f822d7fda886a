// Tiled f32 GEMM: C[M,N] (= or +=) op(A)[M,K] * op(B)[K,N] (+ bias[N]).
// A is stored [M,K] row-major, or [K,M] when transposed; B is [K,N], or [N,K] when transposed
// (nn.Linear: out = x * W^T + b is the `nt` variant with the bias epilogue).
// A 64x64 tile of C per 256-thread block; each thread owns a 4x4 subset strided by 16, so shared
// memory reads are broadcasts (A) or consecutive (B) and global writes are coalesced.
#include "common.cuh"

#define TILE 64
#define TILE_K 16
#define THREADS 256

template <bool A_TRANS, bool B_TRANS>
__device__ __forceinline__ void gemm_tile(float* __restrict__ C, const float* __restrict__ A,
                                          const float* __restrict__ B, const float* __restrict__ bias,
                                          int M, int N, int K, int accumulate) {
  // K-major tiles: As[k][m], Bs[k][n]; +4 keeps float4-free rows off the same banks.
  __shared__ float As[TILE_K][TILE + 4];
  __shared__ float Bs[TILE_K][TILE + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += TILE_K) {
    // Each thread loads 4 elements of each tile; consecutive threads read consecutive addresses.
    for (int e = tid; e < TILE * TILE_K; e += THREADS) {
      int m, k;
      if (A_TRANS) m = e % TILE, k = e / TILE;  // A[k][m]: m fastest
      else m = e / TILE_K, k = e % TILE_K;      // A[m][k]: k fastest
      const int gm = row0 + m, gk = k0 + k;
      float v = 0.0f;
      if (gm < M && gk < K) v = A_TRANS ? A[(long long)gk * M + gm] : A[(long long)gm * K + gk];
      As[k][m] = v;
      int n;
      if (B_TRANS) n = e / TILE_K, k = e % TILE_K;  // B[n][k]: k fastest
      else n = e % TILE, k = e / TILE;              // B[k][n]: n fastest
      const int gn = col0 + n;
      const int gk2 = k0 + k;
      float w = 0.0f;
      if (gn < N && gk2 < K) w = B_TRANS ? B[(long long)gn * K + gk2] : B[(long long)gk2 * N + gn];
      Bs[k][n] = w;
    }
    __syncthreads();
    for (int k = 0; k < TILE_K; ++k) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = As[k][ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }

  for (int i = 0; i < 4; ++i) {
    const int gm = row0 + ty + 16 * i;
    if (gm >= M) continue;
    for (int j = 0; j < 4; ++j) {
      const int gn = col0 + tx + 16 * j;
      if (gn >= N) continue;
      float v = acc[i][j];
      if (bias != nullptr) v += bias[gn];
      float* c = C + (long long)gm * N + gn;
      *c = accumulate ? *c + v : v;
    }
  }
}

#define GEMM_VARIANT(name, AT, BT)                                                          \
  extern "C" __global__ void __launch_bounds__(THREADS)                                     \
      name(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B, \
           const float* __restrict__ bias, int M, int N, int K, int accumulate) {           \
    gemm_tile<AT, BT>(C, A, B, bias, M, N, K, accumulate);                                  \
  }

GEMM_VARIANT(gemm_f32_nn, false, false)
EMU_EXPORT(gemm_f32_nn)
GEMM_VARIANT(gemm_f32_nt, false, true)
EMU_EXPORT(gemm_f32_nt)
GEMM_VARIANT(gemm_f32_tn, true, false)
EMU_EXPORT(gemm_f32_tn)
GEMM_VARIANT(gemm_f32_tt, true, true)
EMU_EXPORT(gemm_f32_tt)
