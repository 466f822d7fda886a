//! Log-mel spectrogram for the random-projection teacher (src/model/rp_teacher.rs).
//!
//! Conventions (the values torchaudio's `MelSpectrogram` uses by default, except the framing):
//! * frame t is centred at sample `hop*t + hop/2` (the centre of EnCodec's frame t, which covers
//!   samples `[hop*t, hop*t + hop)`), `frames = ceil(len / hop)`; samples outside the clip are zeros;
//! * periodic Hann window of `n_fft` samples, `w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)`;
//! * power spectrum `|X_k|^2` (unnormalised DFT), k = 0..=n_fft/2;
//! * HTK mel scale `mel(f) = 2595 log10(1 + f/700)`, `n_mels` triangles whose corners are `n_mels + 2`
//!   points equally spaced in mel from `f_min` to `f_max`, peak 1, no area normalisation
//!   (torchaudio `melscale_fbanks(norm=None, mel_scale="htk")`);
//! * `log(mel + 1e-6)` (natural log).
//!
//! Everything up to the log is f64; the output is f32, [frames, n_mels] row-major.

use super::fft::{Complex, RealFftPlan};
use rayon::prelude::*;
use std::f64::consts::PI;

/// Added to the mel energies before the logarithm.
pub const LOG_FLOOR: f64 = 1e-6;

/// HTK mel of a frequency in Hz.
pub fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

#[derive(Clone, Debug, PartialEq)]
pub struct MelConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub f_min: f64,
    pub f_max: f64,
}

impl Default for MelConfig {
    /// 24 kHz, 2048-point FFT, hop 320 (75 Hz), 128 mels over 0..12 kHz.
    fn default() -> Self {
        MelConfig {
            sample_rate: 24000,
            n_fft: 2048,
            hop: 320,
            n_mels: 128,
            f_min: 0.0,
            f_max: 12000.0,
        }
    }
}

/// Triangular filters stored sparsely: filter m covers FFT bins `start[m] .. start[m] + weights[m].len()`.
#[derive(Clone, Debug)]
pub struct MelFilterbank {
    pub n_freqs: usize,
    pub start: Vec<usize>,
    pub weights: Vec<Vec<f64>>,
    /// The n_mels + 2 corner frequencies in Hz (filter m rises from corner m, peaks at m+1, ends at m+2).
    pub corners_hz: Vec<f64>,
}

impl MelFilterbank {
    pub fn new(cfg: &MelConfig) -> Self {
        let n_freqs = cfg.n_fft / 2 + 1;
        let (m_lo, m_hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
        let step = (m_hi - m_lo) / (cfg.n_mels + 1) as f64;
        let corners_hz: Vec<f64> = (0..cfg.n_mels + 2)
            .map(|i| mel_to_hz(m_lo + step * i as f64))
            .collect();
        let bin_hz = cfg.sample_rate as f64 / cfg.n_fft as f64;
        let mut start = Vec::with_capacity(cfg.n_mels);
        let mut weights = Vec::with_capacity(cfg.n_mels);
        for m in 0..cfg.n_mels {
            let (lo, mid, hi) = (corners_hz[m], corners_hz[m + 1], corners_hz[m + 2]);
            let w: Vec<(usize, f64)> = (0..n_freqs)
                .filter_map(|k| {
                    let f = k as f64 * bin_hz;
                    let v = ((f - lo) / (mid - lo)).min((hi - f) / (hi - mid));
                    (v > 0.0).then_some((k, v))
                })
                .collect();
            start.push(w.first().map_or(0, |&(k, _)| k));
            weights.push(w.into_iter().map(|(_, v)| v).collect());
        }
        MelFilterbank {
            n_freqs,
            start,
            weights,
            corners_hz,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.start.len()
    }

    /// Dense [n_mels, n_freqs] matrix (for tests and references).
    pub fn dense(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n_mels() * self.n_freqs];
        for (m, (s, w)) in self.start.iter().zip(&self.weights).enumerate() {
            out[m * self.n_freqs + s..m * self.n_freqs + s + w.len()].copy_from_slice(w);
        }
        out
    }

    /// Mel energies of one power spectrum (n_freqs values).
    pub fn apply(&self, power: &[f64], out: &mut [f64]) {
        for ((o, &s), w) in out.iter_mut().zip(&self.start).zip(&self.weights) {
            *o = power[s..s + w.len()]
                .iter()
                .zip(w)
                .map(|(p, w)| p * w)
                .sum();
        }
    }
}

/// A reusable log-mel transform (window, FFT plan, filterbank). Immutable, so shareable across threads.
pub struct LogMel {
    cfg: MelConfig,
    window: Vec<f64>,
    fft: RealFftPlan,
    bank: MelFilterbank,
}

impl LogMel {
    /// Panics if `n_fft` is not a power of two or `hop > n_fft` (sizes chosen by code, not users).
    pub fn new(cfg: MelConfig) -> Self {
        assert!(
            cfg.hop >= 1 && cfg.hop <= cfg.n_fft,
            "hop {} must be in 1..=n_fft {}",
            cfg.hop,
            cfg.n_fft
        );
        let n = cfg.n_fft;
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos())
            .collect();
        LogMel {
            fft: RealFftPlan::new(n),
            bank: MelFilterbank::new(&cfg),
            window,
            cfg,
        }
    }

    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    pub fn filterbank(&self) -> &MelFilterbank {
        &self.bank
    }

    /// ceil(len / hop).
    pub fn frames(&self, len: usize) -> usize {
        len.div_ceil(self.cfg.hop)
    }

    /// First sample (possibly negative) of frame t's window: centre `hop*t + hop/2` minus `n_fft/2`.
    pub fn frame_start(&self, t: usize) -> i64 {
        (self.cfg.hop * t + self.cfg.hop / 2) as i64 - (self.cfg.n_fft / 2) as i64
    }

    /// Log-mel of a clip: (frames, [frames, n_mels] row-major).
    pub fn forward(&self, samples: &[f32]) -> (usize, Vec<f32>) {
        let frames = self.frames(samples.len());
        let n_mels = self.cfg.n_mels;
        let mut out = vec![0f32; frames * n_mels];
        // Frames are independent: chunks of 32 per task keep the scratch buffers per chunk.
        out.par_chunks_mut(32 * n_mels)
            .enumerate()
            .for_each(|(chunk, rows)| {
                let n = self.cfg.n_fft;
                let mut frame = vec![0f64; n];
                let mut spec = vec![Complex::ZERO; n / 2 + 1];
                let mut power = vec![0f64; n / 2 + 1];
                let mut mel = vec![0f64; n_mels];
                for (i, row) in rows.chunks_exact_mut(n_mels).enumerate() {
                    let s0 = self.frame_start(chunk * 32 + i);
                    for (j, (f, w)) in frame.iter_mut().zip(&self.window).enumerate() {
                        let s = s0 + j as i64;
                        *f = if s >= 0 && (s as usize) < samples.len() {
                            samples[s as usize] as f64 * w
                        } else {
                            0.0
                        };
                    }
                    self.fft.forward(&frame, &mut spec);
                    for (p, c) in power.iter_mut().zip(&spec) {
                        *p = c.norm_sqr();
                    }
                    self.bank.apply(&power, &mut mel);
                    for (o, m) in row.iter_mut().zip(&mel) {
                        *o = (m + LOG_FLOOR).ln() as f32;
                    }
                }
            });
        (frames, out)
    }
}
