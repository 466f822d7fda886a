//! The subset of transformers' `EncodecConfig` (config.json) that the encoder and the quantizer use,
//! with HF's defaults (= facebook/encodec_24khz) for absent keys, and clear refusals of what this
//! implementation does not do.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct EncodecConfig {
    pub sampling_rate: u32,
    pub audio_channels: usize,
    pub hidden_size: usize,
    pub num_filters: usize,
    pub num_residual_layers: usize,
    /// Decoder order; the encoder downsamples by the reversed list (2, 4, 5, 8 for the 24 kHz model).
    pub upsampling_ratios: Vec<usize>,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub compress: usize,
    pub num_lstm_layers: usize,
    pub use_conv_shortcut: bool,
    pub codebook_size: usize,
    pub codebook_dim: usize,
    pub target_bandwidths: Vec<f64>,
}

impl Default for EncodecConfig {
    /// `EncodecConfig()` of transformers 4.38 (the 24 kHz model).
    fn default() -> Self {
        EncodecConfig {
            sampling_rate: 24000,
            audio_channels: 1,
            hidden_size: 128,
            num_filters: 32,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 5, 4, 2],
            kernel_size: 7,
            last_kernel_size: 7,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            compress: 2,
            num_lstm_layers: 2,
            use_conv_shortcut: true,
            codebook_size: 1024,
            codebook_dim: 128,
            target_bandwidths: vec![1.5, 3.0, 6.0, 12.0, 24.0],
        }
    }
}

impl EncodecConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading EnCodec config {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("EnCodec config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("not valid JSON")?;
        let d = EncodecConfig::default();
        let usize_of = |key: &str, default: usize| -> Result<usize> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .with_context(|| format!("`{key}` = {x} is not a non-negative integer")),
            }
        };
        let bool_of = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .with_context(|| format!("`{key}` = {x} is not a boolean")),
            }
        };
        let str_of = |key: &str, default: &str| -> Result<String> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default.to_string()),
                Some(x) => x
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("`{key}` = {x} is not a string")),
            }
        };
        if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
            ensure!(
                mt == "encodec",
                "model_type is {mt:?}, expected \"encodec\""
            );
        }
        // What the encoder would do differently; refused rather than silently ignored.
        ensure!(
            bool_of("use_causal_conv", true)?,
            "use_causal_conv = false (non-causal EnCodec) is not supported; only the causal 24 kHz \
             architecture is"
        );
        let norm = str_of("norm_type", "weight_norm")?;
        ensure!(
            norm == "weight_norm",
            "norm_type {norm:?} is not supported (only \"weight_norm\")"
        );
        let pad = str_of("pad_mode", "reflect")?;
        ensure!(
            pad == "reflect",
            "pad_mode {pad:?} is not supported (only \"reflect\")"
        );
        ensure!(
            !bool_of("normalize", false)?,
            "normalize = true (per-chunk input scaling, the 48 kHz model) is not supported"
        );
        for key in ["chunk_length_s", "overlap"] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                bail!("{key} = {x}: chunked encoding is not supported (only whole-track, null)");
            }
        }
        let ratios = match v.get("upsampling_ratios") {
            None | Some(Value::Null) => d.upsampling_ratios.clone(),
            Some(x) => x
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|r| r.as_u64().map(|n| n as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .with_context(|| format!("`upsampling_ratios` = {x} is not a list of integers"))?,
        };
        let bandwidths = match v.get("target_bandwidths") {
            None | Some(Value::Null) => d.target_bandwidths.clone(),
            Some(x) => x
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
                .with_context(|| format!("`target_bandwidths` = {x} is not a list of numbers"))?,
        };
        let hidden_size = usize_of("hidden_size", d.hidden_size)?;
        let cfg = EncodecConfig {
            sampling_rate: u32::try_from(usize_of("sampling_rate", 24000)?)
                .context("sampling_rate out of range")?,
            audio_channels: usize_of("audio_channels", d.audio_channels)?,
            hidden_size,
            num_filters: usize_of("num_filters", d.num_filters)?,
            num_residual_layers: usize_of("num_residual_layers", d.num_residual_layers)?,
            upsampling_ratios: ratios,
            kernel_size: usize_of("kernel_size", d.kernel_size)?,
            last_kernel_size: usize_of("last_kernel_size", d.last_kernel_size)?,
            residual_kernel_size: usize_of("residual_kernel_size", d.residual_kernel_size)?,
            dilation_growth_rate: usize_of("dilation_growth_rate", d.dilation_growth_rate)?,
            compress: usize_of("compress", d.compress)?,
            num_lstm_layers: usize_of("num_lstm_layers", d.num_lstm_layers)?,
            use_conv_shortcut: bool_of("use_conv_shortcut", d.use_conv_shortcut)?,
            codebook_size: usize_of("codebook_size", d.codebook_size)?,
            codebook_dim: usize_of("codebook_dim", hidden_size)?,
            target_bandwidths: bandwidths,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.audio_channels == 1,
            "audio_channels = {} is not supported (only mono, 1)",
            self.audio_channels
        );
        ensure!(
            self.codebook_dim == self.hidden_size,
            "codebook_dim {} != hidden_size {}: transformers' EnCodec quantizer has no projection",
            self.codebook_dim,
            self.hidden_size
        );
        ensure!(
            !self.upsampling_ratios.is_empty() && self.upsampling_ratios.iter().all(|&r| r > 0),
            "upsampling_ratios {:?} must be non-empty positive integers",
            self.upsampling_ratios
        );
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_filters", self.num_filters),
            ("kernel_size", self.kernel_size),
            ("last_kernel_size", self.last_kernel_size),
            ("residual_kernel_size", self.residual_kernel_size),
            ("dilation_growth_rate", self.dilation_growth_rate),
            ("compress", self.compress),
            ("num_lstm_layers", self.num_lstm_layers),
        ] {
            ensure!(v > 0, "{name} must be positive");
        }
        ensure!(
            self.num_filters.is_multiple_of(self.compress),
            "num_filters {} is not divisible by compress {}",
            self.num_filters,
            self.compress
        );
        ensure!(
            self.codebook_size.is_power_of_two() && self.codebook_size <= 1 << 16,
            "codebook_size {} must be a power of two <= 65536 (codes are stored as u16)",
            self.codebook_size
        );
        Ok(())
    }

    /// Samples per code frame (320 for the 24 kHz model).
    pub fn hop(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second, ceil(sr / hop) as HF.
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop())
    }

    /// Codebooks stored in the checkpoint: HF's `num_quantizers`.
    pub fn num_quantizers(&self) -> usize {
        let top = self.target_bandwidths.last().copied().unwrap_or(0.0);
        ((1000.0 * top) / (self.frame_rate() as f64 * 10.0)).floor() as usize
    }

    /// Codebooks used at `bandwidth` kbps: floor(bandwidth*1000 / (log2(codebook_size) * frame_rate)),
    /// at least 1 (HF `get_num_quantizers_for_bandwidth`); 8 for the 24 kHz model at 6 kbps.
    pub fn quantizers_for_bandwidth(&self, bandwidth: f64) -> usize {
        let bits = self.codebook_size.trailing_zeros() as f64;
        let per_q = bits * self.frame_rate() as f64;
        ((bandwidth * 1000.0 / per_q).floor() as usize).max(1)
    }
}
