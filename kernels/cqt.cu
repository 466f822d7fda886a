// Magnitude CQT through block FFTs: the device side of src/audio/cqt.rs (read its header first).
// Per overlap-save block of Lb = 2W samples ("clip-block" cb = clip * blocks_per_clip + block):
//   1. cqt_block_fft_columns / cqt_block_fft_rows: four-step FFT of the block packed as M = Lb/2
//      complex samples z[n] = x[2n] + i x[2n+1], M = n1 * n2, each sub-FFT one thread block in shared
//      memory (radix-2, bit-reversed load, in-place DIT butterflies like FftPlan::transform).
//   2. cqt_real_spectrum: the half spectrum X[0..M] of the real block from Z (RealFftPlan::forward).
//   3. cqt_fold_bins: per (clip-block, bin), fold X * band modulo P, P-point inverse FFT in shared
//      memory, |.| at every hop/s-th point (CqtPlan::block_column).
// Twiddles: one f32 table T[j] = e^{-2 pi i j / Lb}, j < Lb/2, rounded from f64 by the launcher; every
// transform size here divides Lb, so every twiddle is an entry of T (no sincos on the device).
#include "common.cuh"

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// The low `bits` bits of x reversed (portable __brev).
__device__ __forceinline__ int reverse_low_bits(unsigned x, int bits) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  x = (x >> 16) | (x << 16);
  return bits == 0 ? 0 : (int)(x >> (32 - bits));
}

// e^{-2 pi i j / lb} for 0 <= j < lb from the half-circle table (e^{-i pi} = -1 for the second half).
__device__ __forceinline__ float2 twiddle(const float2* __restrict__ tw, int j, int lb) {
  const int m = lb >> 1;
  if (j < m) return tw[j];
  const float2 t = tw[j - m];
  return make_float2(-t.x, -t.y);
}

// In-place radix-2 DIT FFT of n = 2^log2n points in shared memory, input already in bit-reversed
// order; forward sign -1, inverse +1 (unnormalised). Stage twiddle W_{2h}^j = T[j * lb / (2h)].
// Starts and ends with a barrier, so callers may write buf right before and read it right after.
__device__ void fft_shared(float2* buf, int log2n, const float2* __restrict__ tw, int lb, bool inverse) {
  const int half = (1 << log2n) >> 1;
  for (int s = 0; s < log2n; ++s) {
    __syncthreads();
    const int h = 1 << s, step = lb >> (s + 1);
    for (int t = threadIdx.x; t < half; t += blockDim.x) {
      const int j = t & (h - 1);
      const int i0 = ((t >> s) << (s + 1)) + j, i1 = i0 + h;
      float2 w = tw[j * step];
      if (inverse) w.y = -w.y;
      const float2 a = buf[i0], p = cmul(w, buf[i1]);
      buf[i0] = make_float2(a.x + p.x, a.y + p.y);
      buf[i1] = make_float2(a.x - p.x, a.y - p.y);
    }
  }
  __syncthreads();
}

// Four-step pass 1. Block (b, cb): column b of z (z[n2 a + b], a < n1), FFT over a, times the
// inter-step twiddle W_M^{b k1} = T[2 b k1], written to y[cb][k1 n2 + b]. z is gathered straight from
// the audio: block sample t is xpad[hop j0 + t] = audio[hop j0 + t - W/2] (zero outside the clip).
extern "C" __global__ void cqt_block_fft_columns(float2* __restrict__ y, const float* __restrict__ audio,
                                                 const float2* __restrict__ tw, int samples, int blocks_per_clip,
                                                 int block_offset, int log2n1, int n2, int lb) {
  DYNAMIC_SHARED(float2, buf);
  const int b = blockIdx.x, cb = blockIdx.y, n1 = 1 << log2n1;
  const int clip = cb / blocks_per_clip;
  const float* x = audio + (long long)clip * samples;
  // block_offset = hop * frames_per_block: samples between consecutive blocks of a clip
  const long long u0 = (long long)(cb % blocks_per_clip) * block_offset - lb / 4;  // W/2 = Lb/4
  for (int a = threadIdx.x; a < n1; a += blockDim.x) {
    const long long u = u0 + 2LL * ((long long)n2 * a + b);
    const float re = (u >= 0 && u < samples) ? x[u] : 0.0f;
    const float im = (u + 1 >= 0 && u + 1 < samples) ? x[u + 1] : 0.0f;
    buf[reverse_low_bits(a, log2n1)] = make_float2(re, im);
  }
  fft_shared(buf, log2n1, tw, lb, false);
  float2* out = y + (long long)cb * (lb / 2);
  for (int k1 = threadIdx.x; k1 < n1; k1 += blockDim.x)
    out[(long long)k1 * n2 + b] = cmul(buf[k1], twiddle(tw, 2 * b * k1, lb));
}
EMU_EXPORT(cqt_block_fft_columns)

// Four-step pass 2. Block (k1, cb): row k1 of y (n2 points, contiguous), FFT over b, written to
// Z[k1 + n1 k2], the natural-order M-point spectrum of z.
extern "C" __global__ void cqt_block_fft_rows(float2* __restrict__ z, const float2* __restrict__ y,
                                              const float2* __restrict__ tw, int n1, int log2n2, int lb) {
  DYNAMIC_SHARED(float2, buf);
  const int k1 = blockIdx.x, n2 = 1 << log2n2;
  const long long base = (long long)blockIdx.y * (lb / 2);
  const float2* in = y + base + (long long)k1 * n2;
  for (int b = threadIdx.x; b < n2; b += blockDim.x) buf[reverse_low_bits(b, log2n2)] = in[b];
  fft_shared(buf, log2n2, tw, lb, false);
  for (int k2 = threadIdx.x; k2 < n2; k2 += blockDim.x) z[base + k1 + (long long)n1 * k2] = buf[k2];
}
EMU_EXPORT(cqt_block_fft_rows)

// X[k], k = 0..M, of the real block from the packed spectrum Z (M = Lb/2): the even samples'
// spectrum E = (Z[k] + conj Z[M-k]) / 2, the odd ones' O = (Z[k] - conj Z[M-k]) / 2i, X = E + W^k O.
// x is [clip_blocks, M + 1]; grid-stride over all of it.
extern "C" __global__ void cqt_real_spectrum(float2* __restrict__ x, const float2* __restrict__ z,
                                             const float2* __restrict__ tw, long long total, int lb) {
  const int m = lb / 2;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long cb = i / (m + 1);
    const int k = (int)(i - cb * (m + 1));
    const float2* zb = z + cb * m;
    const float2 zk = zb[k == m ? 0 : k], zc = zb[k == 0 ? 0 : m - k];  // zc used conjugated
    const float2 even = make_float2(0.5f * (zk.x + zc.x), 0.5f * (zk.y - zc.y));
    const float2 d = make_float2(zk.x - zc.x, zk.y + zc.y);
    const float2 odd = make_float2(0.5f * d.y, -0.5f * d.x);
    const float2 p = cmul(twiddle(tw, k, lb), odd);
    x[i] = make_float2(even.x + p.x, even.y + p.y);
  }
}
EMU_EXPORT(cqt_real_spectrum)

// Block (cb, bin k): A[r] = sum_{i = r - lo mod P} X[(lo + i) mod Lb] coef[i] over the bin's band
// (one thread per residue r, terms in increasing i as on the CPU: no atomics, deterministic), then
// the P-point inverse FFT of A and |A[i hop/s]| for the block's frames. X beyond M is conj X[Lb - q].
// out is [batch, frames, n_bins]. band_start: CSR offsets [n_bins + 1]; band_lo: lo mod Lb.
extern "C" __global__ void cqt_fold_bins(float* __restrict__ out, const float2* __restrict__ x,
                                         const float2* __restrict__ coef, const long long* __restrict__ band_start,
                                         const int* __restrict__ band_lo, const float2* __restrict__ tw, int n_bins,
                                         int frames, int blocks_per_clip, int frames_per_block, int frame_step,
                                         int log2p, int lb) {
  DYNAMIC_SHARED(float2, acc);
  const int cb = blockIdx.x, k = blockIdx.y, p = 1 << log2p, m = lb / 2;
  const float2* xb = x + (long long)cb * (m + 1);
  const float2* c = coef + band_start[k];
  const long long len = band_start[k + 1] - band_start[k];
  const int lo = band_lo[k];
  for (int r = threadIdx.x; r < p; r += blockDim.x) {
    float2 a = make_float2(0.0f, 0.0f);
    for (long long i = (r - lo % p + p) % p; i < len; i += p) {
      long long q = lo + i;
      if (q >= lb) q -= lb;
      float2 xq = q <= m ? xb[q] : xb[lb - q];
      if (q > m) xq.y = -xq.y;
      const float2 t = cmul(xq, c[i]);
      a.x += t.x;
      a.y += t.y;
    }
    acc[reverse_low_bits(r, log2p)] = a;
  }
  fft_shared(acc, log2p, tw, lb, true);
  const int clip = cb / blocks_per_clip, j0 = (cb % blocks_per_clip) * frames_per_block;
  const int nf = min(frames_per_block, frames - j0);
  float* o = out + ((long long)clip * frames + j0) * n_bins + k;
  for (int i = threadIdx.x; i < nf; i += blockDim.x) {
    const float2 v = acc[i * frame_step];
    o[(long long)i * n_bins] = hypotf(v.x, v.y);
  }
}
EMU_EXPORT(cqt_fold_bins)
