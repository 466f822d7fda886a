//! MERT / HuBERT `config.json`: the fields the engine uses, with HF's defaults, and validation.

use crate::ops::activation::Activation;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_true() -> bool {
    true
}
fn default_eps() -> f32 {
    1e-5
}
fn default_rate() -> u32 {
    24000
}
fn default_gelu() -> String {
    "gelu".into()
}

/// The subset of `HubertConfig` / `MERTConfig` that defines the network. Unknown keys are kept verbatim in
/// `extra` so a config written back is the config read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    pub conv_dim: Vec<usize>,
    pub conv_kernel: Vec<usize>,
    pub conv_stride: Vec<usize>,
    #[serde(default)]
    pub conv_bias: bool,
    /// "group" (GroupNorm on conv layer 0 only; MERT-v1-95M) or "layer" (LayerNorm on every conv layer).
    pub feat_extract_norm: String,
    #[serde(default = "default_gelu")]
    pub feat_extract_activation: String,
    #[serde(default = "default_true")]
    pub feat_proj_layer_norm: bool,
    /// false: post-LN transformer (MERT-v1-95M); true: pre-LN with a final LayerNorm (MERT-v1-330M).
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    pub num_conv_pos_embeddings: usize,
    pub num_conv_pos_embedding_groups: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    #[serde(default)]
    pub hidden_dropout: f32,
    #[serde(default)]
    pub attention_dropout: f32,
    #[serde(default)]
    pub activation_dropout: f32,
    #[serde(default)]
    pub feat_proj_dropout: f32,
    #[serde(default)]
    pub layerdrop: f32,
    #[serde(default)]
    pub feature_extractor_cqt: bool,
    #[serde(default)]
    pub deepnorm: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MertConfig {
    pub fn from_json_str(text: &str) -> Result<Self> {
        let cfg: MertConfig =
            serde_json::from_str(text).context("config.json is not a valid MERT/HuBERT config")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn to_json_string(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.conv_dim.len();
        ensure!(n > 0, "conv_dim is empty");
        ensure!(
            self.conv_kernel.len() == n && self.conv_stride.len() == n,
            "conv_dim ({n}), conv_kernel ({}) and conv_stride ({}) must have the same length",
            self.conv_kernel.len(),
            self.conv_stride.len()
        );
        ensure!(
            self.conv_kernel
                .iter()
                .chain(&self.conv_stride)
                .all(|&k| k > 0),
            "conv kernels and strides must be positive"
        );
        ensure!(
            self.hidden_size > 0 && self.num_attention_heads > 0,
            "hidden_size and num_attention_heads must be positive"
        );
        ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not divisible by num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.num_conv_pos_embedding_groups > 0
                && self
                    .hidden_size
                    .is_multiple_of(self.num_conv_pos_embedding_groups),
            "hidden_size {} is not divisible by num_conv_pos_embedding_groups {}",
            self.hidden_size,
            self.num_conv_pos_embedding_groups
        );
        ensure!(
            self.num_conv_pos_embeddings > 0,
            "num_conv_pos_embeddings must be positive"
        );
        match self.feat_extract_norm.as_str() {
            "group" | "layer" => {}
            other => bail!("feat_extract_norm must be \"group\" or \"layer\", got {other:?}"),
        }
        self.hidden_activation()?;
        self.feat_activation()?;
        ensure!(
            !self.feature_extractor_cqt,
            "feature_extractor_cqt = true (CQT input features) is not supported"
        );
        ensure!(
            !self.deepnorm,
            "deepnorm = true is not supported (MERT-v1 models use false)"
        );
        for (what, p) in [
            ("hidden_dropout", self.hidden_dropout),
            ("attention_dropout", self.attention_dropout),
            ("activation_dropout", self.activation_dropout),
            ("feat_proj_dropout", self.feat_proj_dropout),
            ("layerdrop", self.layerdrop),
        ] {
            ensure!(
                (0.0..1.0).contains(&p),
                "{what} = {p} is not a probability in [0, 1)"
            );
        }
        Ok(())
    }

    /// The FFN's activation (`hidden_act`).
    pub fn hidden_activation(&self) -> Result<Activation> {
        Activation::parse(&self.hidden_act).context("hidden_act")
    }

    /// The conv stack's and the positional conv's activation (`feat_extract_activation`).
    pub fn feat_activation(&self) -> Result<Activation> {
        Activation::parse(&self.feat_extract_activation).context("feat_extract_activation")
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Total hop of the conv stack in samples (320 for MERT).
    pub fn hop(&self) -> usize {
        self.conv_stride.iter().product()
    }

    /// Frames the conv stack produces from `samples` input samples (0 if too short).
    pub fn frames_for_samples(&self, samples: usize) -> usize {
        let mut len = samples;
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            if len < k {
                return 0;
            }
            len = (len - k) / s + 1;
        }
        len
    }

    /// Valid frames per clip of a padded batch, as transformers derives them from `attention_mask`
    /// (`sample_mask` [batch*samples], 1 = real sample), and the per-frame validity [batch*frames]
    /// (None when every sample is real).
    pub fn frame_validity(
        &self,
        sample_mask: Option<&[u8]>,
        batch: usize,
        samples: usize,
        frames: usize,
    ) -> Result<(Vec<usize>, Option<Vec<u8>>)> {
        let Some(m) = sample_mask else {
            return Ok((vec![frames; batch], None));
        };
        ensure!(
            m.len() == batch * samples,
            "attention mask has {} entries for {batch}x{samples} samples",
            m.len()
        );
        let lengths: Vec<usize> = m
            .chunks_exact(samples)
            .map(|row| self.frames_for_samples(row.iter().filter(|&&v| v != 0).count()))
            .collect();
        let valid = lengths
            .iter()
            .flat_map(|&n| (0..frames).map(move |t| u8::from(t < n)))
            .collect();
        Ok((lengths, Some(valid)))
    }

    /// The smallest input that yields at least one frame.
    pub fn min_samples(&self) -> usize {
        let mut len = 1;
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride).rev() {
            len = (len - 1) * s + k;
        }
        len
    }
}
