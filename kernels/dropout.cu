// Counter-based dropout, f32: the keep decision of element i is a pure function of (seed, i), exactly
// `ops::dropout::dropout_keep` (splitmix64's output mix of seed ^ i*GOLDEN, top 24 bits as u in [0, 1),
// keep = u >= p), so forward, backward and the CPU all draw the same mask with no mask tensor stored.
// out (= or +=) keep ? x * scale : 0, with scale = 1 / (1 - p) rounded in f32 by the launcher; the _rn
// intrinsics keep the accumulate from contracting into an FMA (bit-exact with the CPU).
#include "common.cuh"  // dropout_keep

#define THREADS 256

// Grid-stride over n elements. Forward: accumulate = 0; backward (dx += mask * dout * scale): 1.
extern "C" __global__ void __launch_bounds__(THREADS)
    dropout_apply_f32(float* __restrict__ out, const float* __restrict__ x, long long n, float p, float scale,
                      unsigned long long seed, int accumulate) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float y = dropout_keep(seed, (unsigned long long)i, p) ? __fmul_rn(x[i], scale) : 0.0f;
    out[i] = accumulate ? __fadd_rn(out[i], y) : y;
  }
}
EMU_EXPORT(dropout_apply_f32)
