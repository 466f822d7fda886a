//! Band-limited sample-rate conversion: a Kaiser-windowed sinc, evaluated polyphase.
//!
//! For a rate pair reduced to `from/g -> to/g`, output sample `n` sits at input position
//! `n * from / to`; its fractional part takes only `to/g` distinct values (the phases), so the
//! filter taps of each phase are computed once. The low-pass has its transition band over
//! [0.90, 1.00] x min(from, to)/2 and a Kaiser window designed for `STOPBAND_DB`, so nothing
//! above the lower Nyquist folds back by more than about -90 dB, and 0..0.9 Nyquist passes flat.
//!
//! Length convention (same as torchaudio's `Resample`): `ceil(len * to / from)` output samples,
//! the first aligned with input sample 0; the signal is taken as zero outside `0..len`.

use anyhow::{bail, Result};
use rayon::prelude::*;

/// Design attenuation of the stop band (Kaiser formula), in dB.
pub const STOPBAND_DB: f64 = 90.0;
/// Passband edge as a fraction of the lower of the two Nyquist frequencies.
pub const PASSBAND_EDGE: f64 = 0.90;
/// Largest precomputed phase table (floats); beyond it taps are computed per output sample.
const MAX_TABLE: usize = 1 << 22;

/// Resamples `x` from `from` Hz to `to` Hz; returns `ceil(x.len() * to / from)` samples.
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    resample_range(x, from, to, 0, resampled_len(x.len(), from, to))
}

/// Samples of `len` input samples resampled from `from` Hz to `to` Hz: `ceil(len * to / from)`.
pub fn resampled_len(len: usize, from: u32, to: u32) -> usize {
    if from == 0 {
        return 0;
    }
    ((len as u128 * to as u128).div_ceil(from as u128)) as usize
}

/// Output samples `start..start + count` of [`resample`]`(x, from, to)`, bit-identical to that slice
/// (every output sample is computed on its own), without computing the others: a crop of a long
/// recording costs the crop.
pub fn resample_range(
    x: &[f32],
    from: u32,
    to: u32,
    start: usize,
    count: usize,
) -> Result<Vec<f32>> {
    resample_window(x, 0, x.len(), from, to, start, count)
}

/// The input samples `lo..hi` (of a signal of `input_len` samples) that output samples
/// `start..start + count` of [`resample`] read: decoding only those is enough for
/// [`resample_window`].
pub fn input_window(
    input_len: usize,
    from: u32,
    to: u32,
    start: usize,
    count: usize,
) -> (usize, usize) {
    if from == to || from == 0 || to == 0 || count == 0 {
        return (start.min(input_len), (start + count).min(input_len));
    }
    let g = gcd(from as u64, to as u64);
    let (down, up) = (from as u64 / g, to as u64 / g);
    let half = Filter::new(from, to).half as u64;
    let k_first = start as u64 * down / up;
    let k_last = (start + count - 1) as u64 * down / up;
    let lo = k_first.saturating_sub(half - 1) as usize;
    let hi = (k_last + half + 1) as usize;
    (lo.min(input_len), hi.min(input_len))
}

/// [`resample_range`] of a signal of `input_len` samples of which only `window` (= samples
/// `window_start..window_start + window.len()`, covering [`input_window`]) is at hand;
/// bit-identical to `resample_range` of the whole signal.
pub fn resample_window(
    window: &[f32],
    window_start: usize,
    input_len: usize,
    from: u32,
    to: u32,
    start: usize,
    count: usize,
) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        bail!("cannot resample between {from} Hz and {to} Hz: rates must be positive");
    }
    let total = resampled_len(input_len, from, to);
    if start.checked_add(count).is_none_or(|end| end > total) {
        bail!("resampling: samples {start}..{start}+{count} of {total}");
    }
    let (lo, hi) = input_window(input_len, from, to, start, count);
    if lo < window_start
        || hi > window_start + window.len()
        || window_start + window.len() > input_len
    {
        bail!(
            "resampling: input samples {lo}..{hi} needed, {window_start}..{} at hand (of {input_len})",
            window_start + window.len()
        );
    }
    if from == to {
        return Ok(window[start - window_start..start - window_start + count].to_vec());
    }
    let g = gcd(from as u64, to as u64);
    let (down, up) = (from as u64 / g, to as u64 / g);
    let out_len = count;
    let filter = Filter::new(from, to);
    let taps = filter.taps();
    let table: Option<Vec<f32>> = (up as usize)
        .checked_mul(taps)
        .filter(|&size| size <= MAX_TABLE)
        .map(|_| {
            let mut t = vec![0f32; up as usize * taps];
            for (phase, row) in t.chunks_mut(taps).enumerate() {
                filter.fill(phase as f64 / up as f64, row);
            }
            t
        });

    let mut out = vec![0f32; out_len];
    out.par_chunks_mut(4096)
        .enumerate()
        .for_each(|(chunk, ys)| {
            let mut scratch = vec![0f32; taps];
            for (i, y) in ys.iter_mut().enumerate() {
                let n = (start + chunk * 4096 + i) as u64;
                let pos = n * down;
                let (k0, phase) = (pos / up, (pos % up) as usize);
                let h: &[f32] = match &table {
                    Some(t) => &t[phase * taps..(phase + 1) * taps],
                    None => {
                        filter.fill(phase as f64 / up as f64, &mut scratch);
                        &scratch
                    }
                };
                // h[j] multiplies x[k0 - (half - 1) + j].
                let first = k0 as i64 - (filter.half as i64 - 1);
                *y = dot_zero_padded(window, first - window_start as i64, h);
            }
        });
    Ok(out)
}

/// `sum_j x[first + j] * h[j]`, with x taken as zero outside its bounds.
fn dot_zero_padded(x: &[f32], first: i64, h: &[f32]) -> f32 {
    let lo = first.max(0);
    let hi = (first + h.len() as i64).min(x.len() as i64);
    if lo >= hi {
        return 0.0;
    }
    let xs = &x[lo as usize..hi as usize];
    let hs = &h[(lo - first) as usize..(hi - first) as usize];
    let mut acc = 0f64;
    for (a, b) in xs.iter().zip(hs) {
        acc += (*a as f64) * (*b as f64);
    }
    acc as f32
}

/// The low-pass kernel expressed in input-sample units.
struct Filter {
    /// Cutoff (centre of the transition band) in cycles per input sample.
    fc: f64,
    /// Window half-length in input samples.
    half_len: f64,
    /// Taps per side: the kernel spans `2 * half` input samples.
    half: usize,
    beta: f64,
}

impl Filter {
    fn new(from: u32, to: u32) -> Filter {
        let low = from.min(to) as f64;
        let transition_hz = (1.0 - PASSBAND_EDGE) * low / 2.0;
        let fc_hz = (1.0 + PASSBAND_EDGE) / 2.0 * low / 2.0;
        // Kaiser's estimate: order N = (A - 8) / (2.285 * dw), dw = 2 pi transition / fs.
        let half_seconds =
            (STOPBAND_DB - 8.0) / (2.285 * 2.0 * std::f64::consts::PI * transition_hz) / 2.0;
        let half_len = half_seconds * from as f64;
        Filter {
            fc: fc_hz / from as f64,
            half_len,
            half: half_len.ceil() as usize + 1,
            beta: 0.1102 * (STOPBAND_DB - 8.7),
        }
    }

    fn taps(&self) -> usize {
        2 * self.half
    }

    /// Taps for an output at input position `k0 + frac`; each phase is normalised to sum 1,
    /// which makes DC exact whatever the residual ripple of the truncated kernel.
    fn fill(&self, frac: f64, row: &mut [f32]) {
        let i0_beta = bessel_i0(self.beta);
        let mut vals = vec![0f64; row.len()];
        for (j, v) in vals.iter_mut().enumerate() {
            let d = frac + (self.half as f64 - 1.0) - j as f64;
            let r = d / self.half_len;
            if r.abs() >= 1.0 {
                continue;
            }
            let window = bessel_i0(self.beta * (1.0 - r * r).sqrt()) / i0_beta;
            *v = 2.0 * self.fc * sinc(2.0 * self.fc * d) * window;
        }
        let sum: f64 = vals.iter().sum();
        for (r, v) in row.iter_mut().zip(&vals) {
            *r = (v / sum) as f32;
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges for all x).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    while term > sum * 1e-17 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
