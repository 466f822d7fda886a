//! Random-projection quantizer teacher (BEST-RQ, as used by "A Foundation Model for Music Informatics"):
//! needs no trained weights, only a seed.
//!
//! Per clip: log-mel [T, n_mels] at 75 Hz (src/audio/mel.rs: frame t centred at sample 320t + 160,
//! zero padding, HTK mel, log(mel + 1e-6)) -> clamp at the clip's maximum minus 80 dB (librosa's
//! `top_db`; without it, window leakage 100 dB down in empty bands would be read as content and any
//! inaudible noise would change the codes) -> per-clip standardisation of each mel bin over the clip's
//! frames, `z = (x - mean_b) / sqrt(var_b + 1)` -> for each codebook k: `y = z P_k` with a fixed
//! Xavier-normal matrix P_k [n_mels, dim] -> code = argmax_c <y, e_{k,c}> over C fixed unit vectors
//! e_{k,c} (standard normal, normalised), first index on ties. The argmax of the dot product with unit
//! codewords is the argmax of cosine similarity (|y| is the same for every c).
//!
//! Per-clip statistics (instead of BEST-RQ's dataset statistics) need no pass over a dataset and make a
//! clip's codes independent of what else is in the dataset; the price is that codes depend on the
//! clip's extent (a crop and the full track give slightly different codes) and that a clip with no
//! change at all (a steady tone) carries information only in its edge frames. The +1 (nat^2) in the
//! denominator keeps bins that hardly vary over the clip (silent bands sitting at the log floor,
//! typical music bins vary by 1-3 nats) from being blown up to unit variance, where inaudible noise
//! would decide the codes.
//!
//! Random numbers: splitmix64 streams (one per matrix, derived from the seed) and Box-Muller in f64, so
//! the matrices are the same on every platform up to the last bit of `ln`/`cos` of the platform libm;
//! all later arithmetic runs in a fixed order (no FMA contraction, no parallel reductions).

use super::teacher::Teacher;
use crate::audio::mel::{LogMel, MelConfig};
use anyhow::{ensure, Result};
use rayon::prelude::*;

/// Dynamic range kept below the clip's loudest mel value: 80 dB = 8 ln 10 nats of power.
pub const TOP_DB_NATS: f64 = 8.0 * std::f64::consts::LN_10;

/// Added to each mel bin's per-clip variance (nats^2) before dividing by its square root.
pub const VAR_FLOOR: f64 = 1.0;

#[derive(Clone, Debug, PartialEq)]
pub struct RpConfig {
    pub codebooks: usize,
    pub codebook_size: usize,
    pub seed: u64,
    pub n_mels: usize,
    pub n_fft: usize,
    pub hop: usize,
    pub sample_rate: u32,
    /// Projection (and codeword) dimension.
    pub dim: usize,
}

impl Default for RpConfig {
    /// 8 x 1024 codes (MERT's label layout), seed 0, 128 mels, 2048-point FFT, hop 320 at 24 kHz, dim 16.
    fn default() -> Self {
        RpConfig {
            codebooks: 8,
            codebook_size: 1024,
            seed: 0,
            n_mels: 128,
            n_fft: 2048,
            hop: 320,
            sample_rate: 24000,
            dim: 16,
        }
    }
}

impl RpConfig {
    /// Identifies the codes exactly (stored in label files to detect stale ones).
    pub fn params_string(&self) -> String {
        format!(
            "rp-v1 seed={} codebooks={} codebook_size={} dim={} n_mels={} n_fft={} hop={} \
             sample_rate={} mel=htk f_max=sr/2 window=hann-periodic pad=zero centre=hop*t+hop/2 \
             log=ln(x+1e-6) top_db=80 norm=per-clip-per-bin(var+1)",
            self.seed,
            self.codebooks,
            self.codebook_size,
            self.dim,
            self.n_mels,
            self.n_fft,
            self.hop,
            self.sample_rate
        )
    }
}

pub use crate::rng::SplitMix64;

pub struct RandomProjectionTeacher {
    cfg: RpConfig,
    mel: LogMel,
    /// [codebooks, n_mels, dim]
    projections: Vec<f32>,
    /// [codebooks, codebook_size, dim], unit rows
    codewords: Vec<f32>,
    /// The same, transposed per codebook: [codebooks, dim, codebook_size].
    codewords_t: Vec<f32>,
}

impl RandomProjectionTeacher {
    pub fn new(cfg: RpConfig) -> Result<Self> {
        ensure!(
            cfg.codebooks >= 1,
            "random-projection teacher: codebooks must be >= 1"
        );
        ensure!(
            (1..=65536).contains(&cfg.codebook_size),
            "random-projection teacher: codebook_size {} must be in 1..=65536 (codes are u16)",
            cfg.codebook_size
        );
        ensure!(
            cfg.dim >= 1 && cfg.n_mels >= 1,
            "random-projection teacher: dim and n_mels must be >= 1"
        );
        ensure!(
            cfg.n_fft.is_power_of_two() && cfg.n_fft >= 2 && (1..=cfg.n_fft).contains(&cfg.hop),
            "random-projection teacher: n_fft {} must be a power of two and hop {} in 1..=n_fft",
            cfg.n_fft,
            cfg.hop
        );
        let mel = LogMel::new(MelConfig {
            sample_rate: cfg.sample_rate,
            n_fft: cfg.n_fft,
            hop: cfg.hop,
            n_mels: cfg.n_mels,
            f_min: 0.0,
            f_max: cfg.sample_rate as f64 / 2.0,
        });
        let xavier_std = (2.0 / (cfg.n_mels + cfg.dim) as f64).sqrt();
        let mut projections = Vec::with_capacity(cfg.codebooks * cfg.n_mels * cfg.dim);
        let mut codewords = Vec::with_capacity(cfg.codebooks * cfg.codebook_size * cfg.dim);
        for k in 0..cfg.codebooks as u64 {
            let p = SplitMix64::stream(cfg.seed, 2 * k).normals(cfg.n_mels * cfg.dim);
            projections.extend(p.iter().map(|v| (v * xavier_std) as f32));
            let e = SplitMix64::stream(cfg.seed, 2 * k + 1).normals(cfg.codebook_size * cfg.dim);
            for row in e.chunks_exact(cfg.dim) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                codewords.extend(row.iter().map(|v| (v / norm) as f32));
            }
        }
        let (c, d) = (cfg.codebook_size, cfg.dim);
        let mut codewords_t = vec![0f32; codewords.len()];
        for (k, book) in codewords.chunks_exact(c * d).enumerate() {
            for (i, row) in book.chunks_exact(d).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    codewords_t[k * c * d + j * c + i] = v;
                }
            }
        }
        Ok(RandomProjectionTeacher {
            cfg,
            mel,
            projections,
            codewords,
            codewords_t,
        })
    }

    pub fn config(&self) -> &RpConfig {
        &self.cfg
    }

    pub fn log_mel(&self) -> &LogMel {
        &self.mel
    }

    /// Projection matrix of codebook k, [n_mels, dim] row-major.
    pub fn projection(&self, k: usize) -> &[f32] {
        let n = self.cfg.n_mels * self.cfg.dim;
        &self.projections[k * n..(k + 1) * n]
    }

    /// Unit codewords of codebook k, [codebook_size, dim] row-major.
    pub fn codebook(&self, k: usize) -> &[f32] {
        let n = self.cfg.codebook_size * self.cfg.dim;
        &self.codewords[k * n..(k + 1) * n]
    }

    /// Raises every log-mel value to at least the clip's maximum minus `TOP_DB_NATS`.
    pub fn clamp_dynamic_range(feats: &mut [f32]) {
        let max = feats.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = (max as f64 - TOP_DB_NATS) as f32;
        feats.iter_mut().for_each(|x| *x = x.max(floor));
    }

    /// Standardises each mel bin over the clip's frames in place ([frames, n_mels]):
    /// `(x - mean) / sqrt(var + VAR_FLOOR)`.
    pub fn standardise(feats: &mut [f32], n_mels: usize) {
        let frames = feats.len() / n_mels;
        if frames == 0 {
            return;
        }
        let mut mean = vec![0f64; n_mels];
        let mut var = vec![0f64; n_mels];
        for row in feats.chunks_exact(n_mels) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= frames as f64);
        for row in feats.chunks_exact(n_mels) {
            for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (x as f64 - m).powi(2);
            }
        }
        let inv: Vec<f64> = var
            .iter()
            .map(|v| 1.0 / (v / frames as f64 + VAR_FLOOR).sqrt())
            .collect();
        for row in feats.chunks_exact_mut(n_mels) {
            for ((x, m), s) in row.iter_mut().zip(&mean).zip(&inv) {
                *x = ((*x as f64 - m) * s) as f32;
            }
        }
    }

    /// Code of one standardised frame in codebook k (`y`: dim scratch, `scores`: codebook_size scratch).
    fn quantize(&self, k: usize, z: &[f32], y: &mut [f32], scores: &mut [f32]) -> u16 {
        let (dim, size) = (self.cfg.dim, self.cfg.codebook_size);
        y.iter_mut().for_each(|v| *v = 0.0);
        for (&zm, prow) in z.iter().zip(self.projection(k).chunks_exact(dim)) {
            for (v, &p) in y.iter_mut().zip(prow) {
                *v += zm * p;
            }
        }
        // Scores of all codewords at once from the transposed codebook: the inner loop runs over
        // contiguous codewords (vectorises), each score still summed over d in ascending order.
        scores.iter_mut().for_each(|s| *s = 0.0);
        let book_t = &self.codewords_t[k * size * dim..(k + 1) * size * dim];
        for (&yd, col) in y.iter().zip(book_t.chunks_exact(size)) {
            for (s, &e) in scores.iter_mut().zip(col) {
                *s += yd * e;
            }
        }
        let mut best = (0usize, f32::NEG_INFINITY);
        for (c, &s) in scores.iter().enumerate() {
            if s > best.1 {
                best = (c, s);
            }
        }
        best.0 as u16
    }
}

impl Teacher for RandomProjectionTeacher {
    fn name(&self) -> &str {
        "random-projection"
    }
    fn codebooks(&self) -> usize {
        self.cfg.codebooks
    }
    fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }
    fn sample_rate(&self) -> u32 {
        self.cfg.sample_rate
    }
    fn hop(&self) -> usize {
        self.cfg.hop
    }
    fn params(&self) -> String {
        self.cfg.params_string()
    }

    fn encode(&self, samples: &[f32]) -> Result<Vec<u16>> {
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            anyhow::bail!("random-projection teacher: sample {i} is not finite");
        }
        let n_mels = self.cfg.n_mels;
        let (frames, mut feats) = self.mel.forward(samples);
        Self::clamp_dynamic_range(&mut feats);
        Self::standardise(&mut feats, n_mels);
        let k_total = self.cfg.codebooks;
        // Frame-major work in parallel, then transposed to [codebooks, frames].
        let per_frame: Vec<u16> = feats
            .par_chunks(n_mels)
            .flat_map_iter(|z| {
                let mut y = vec![0f32; self.cfg.dim];
                let mut scores = vec![0f32; self.cfg.codebook_size];
                (0..k_total)
                    .map(|k| self.quantize(k, z, &mut y, &mut scores))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut codes = vec![0u16; k_total * frames];
        for (t, row) in per_frame.chunks_exact(k_total).enumerate() {
            for (k, &c) in row.iter().enumerate() {
                codes[k * frames + t] = c;
            }
        }
        Ok(codes)
    }
}
