//! Counter-based dropout: the keep decision of element i is a pure function of (seed, i), so the
//! forward, the backward and a CUDA kernel (kernels/dropout.cu) all reproduce the same mask.
//!
//! Exact definition (all arithmetic wrapping on u64):
//!   z = seed ^ (i * 0x9E3779B97F4A7C15)
//!   z = z + 0x9E3779B97F4A7C15
//!   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//!   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//!   z = z ^ (z >> 31)                       (this is splitmix64's output mix)
//!   u = (float)(z >> 40) * 2^-24            (top 24 bits, exact in f32, u in [0, 1))
//!   keep = u >= p                           (f32 comparison)
//! Kept values are scaled by `scale = 1.0f / (1.0f - p)` computed in f32: out = x * scale
//! (one f32 multiply, not a division); dropped values are exactly 0.

use rayon::prelude::*;

use crate::rng::GOLDEN_GAMMA;
const CHUNK: usize = 1 << 15;

/// The 64-bit hash of (seed, index): splitmix64's output for state `seed ^ index*GOLDEN`.
/// (seed 0: index 0 -> 0xE220A8397B1DCDAF, index 1 -> 0x6E789E6AA1B965F4, splitmix64's first outputs.)
pub fn dropout_hash(seed: u64, index: u64) -> u64 {
    crate::rng::mix64((seed ^ index.wrapping_mul(GOLDEN_GAMMA)).wrapping_add(GOLDEN_GAMMA))
}

/// The keep decision for element `index` (see the module doc for the exact definition).
pub fn dropout_keep(seed: u64, index: u64, p: f32) -> bool {
    let u = (dropout_hash(seed, index) >> 40) as f32 * (1.0 / 16_777_216.0);
    u >= p
}

fn apply(out: &mut [f32], x: &[f32], p: f32, seed: u64, accumulate: bool) {
    assert!((0.0..=1.0).contains(&p), "dropout: p = {p} outside [0, 1]");
    assert_eq!(out.len(), x.len(), "dropout: lengths differ");
    let scale = 1.0f32 / (1.0f32 - p);
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (o, x))| {
            let base = (c * CHUNK) as u64;
            for (i, (o, &xv)) in o.iter_mut().zip(x).enumerate() {
                let y = if dropout_keep(seed, base + i as u64, p) {
                    xv * scale
                } else {
                    0.0
                };
                if accumulate {
                    *o += y;
                } else {
                    *o = y;
                }
            }
        });
}

/// out = keep ? x * scale : 0
pub fn dropout_forward(out: &mut [f32], x: &[f32], p: f32, seed: u64) {
    let _profile = super::profile::scope("dropout fwd", 0.0);
    apply(out, x, p, seed, false);
}

/// dx += keep ? dout * scale : 0 (same mask as the forward with the same seed)
pub fn dropout_backward(dx: &mut [f32], dout: &[f32], p: f32, seed: u64) {
    let _profile = super::profile::scope("dropout bwd", 0.0);
    apply(dx, dout, p, seed, true);
}
