//! The MERT / HuBERT network (docs/model.md), forward on the tape; backward comes from the tape.
//!
//! Two forms, chosen by config.json: post-LN with a GroupNorm on conv layer 0 (MERT-v1-95M) and pre-LN with
//! LayerNorm on every conv layer and a final encoder LayerNorm (`do_stable_layer_norm`, MERT-v1-330M).
//! A padded batch behaves as transformers does: the conv stack sees the zero padding, padded frames are
//! zeroed before the positional conv and masked as attention keys.

use super::config::MertConfig;
use super::contract::{attention_dropout_seed, layerdrop_rng, DropoutSeeds, CONV_NORM_EPS};
use super::weights::{self, WeightNormSpelling, POS_CONV_G, POS_CONV_V};
use crate::autograd::{nn, ParamStore, Tape, Var};
use crate::ops::attention::AttentionDropout;
use crate::tensor::Tensor;
use anyhow::{ensure, Context, Result};
use std::path::Path;

pub struct Mert {
    pub config: MertConfig,
    pub params: ParamStore,
    pub spelling: WeightNormSpelling,
}

/// Training-time behaviour of one forward pass. `Default` is inference (no dropout, no masking).
#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    /// Apply dropout and LayerDrop with the config's probabilities.
    pub train: bool,
    /// Seed of this step's dropout masks and LayerDrop decisions.
    pub seed: u64,
    /// Frames [B*T] (1 = masked) replaced by `masked_spec_embed` after the feature projection.
    pub mask_time: Option<Vec<u8>>,
    /// Gradient multiplier on the conv-stack output (fairseq feature_grad_mult; 1.0 = none).
    pub feature_grad_mult: Option<f32>,
}

pub struct MertOutput {
    /// `hidden_states` as transformers returns them: num_hidden_layers + 1 tensors [B, T, H].
    pub hidden_states: Vec<Var>,
    /// Conv-stack output [B, T, C] before the projection LayerNorm (for the feature penalty).
    pub features: Var,
    /// Valid frames per clip.
    pub frame_lengths: Vec<usize>,
}

impl Mert {
    /// Load an HF-layout directory: config.json + model.safetensors (or pytorch_model.bin).
    pub fn load(dir: &Path) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "model directory {} does not exist",
            dir.display()
        );
        let config = MertConfig::from_file(&dir.join("config.json"))?;
        let (params, spelling) = weights::load_params(dir, &config)?;
        Ok(Mert {
            config,
            params,
            spelling,
        })
    }

    /// A randomly initialised model (fairseq's from-scratch initialisation).
    pub fn random(config: MertConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let params = weights::init_params(&config, seed)?;
        Ok(Mert {
            config,
            params,
            spelling: WeightNormSpelling::Legacy,
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        weights::save_model_dir(dir, &self.config, &self.params, self.spelling)
    }

    fn p(&self, tape: &mut Tape, name: &str) -> Result<Var> {
        let id = self
            .params
            .id(name)
            .with_context(|| format!("parameter {name} missing"))?;
        Ok(tape.param(&self.params, id))
    }

    fn p_opt(&self, tape: &mut Tape, name: &str) -> Option<Var> {
        self.params.id(name).map(|id| tape.param(&self.params, id))
    }

    /// Forward a batch `audio` [B, L] (row-major). `sample_mask` [B*L] (1 = real sample) marks padding as
    /// transformers' `attention_mask` does; None = every sample is real.
    pub fn forward(
        &self,
        tape: &mut Tape,
        audio: &Tensor,
        sample_mask: Option<&[u8]>,
        opts: &ForwardOptions,
    ) -> Result<MertOutput> {
        let cfg = &self.config;
        ensure!(
            audio.shape().len() == 2,
            "audio must be [batch, samples], got {:?}",
            audio.shape()
        );
        let (batch, samples) = (audio.shape()[0], audio.shape()[1]);
        ensure!(
            samples >= cfg.min_samples(),
            "audio of {samples} samples is shorter than the model's receptive field ({} samples)",
            cfg.min_samples()
        );
        let mut seeds = DropoutSeeds::new(opts.seed);
        let mut dropout = |tape: &mut Tape, x: &Var, p: f32| {
            let seed = seeds.next_seed();
            if opts.train {
                nn::dropout(tape, x, p, seed)
            } else {
                x.clone()
            }
        };

        // Feature extractor: [B, 1, L] -> [B, C, T].
        let mut x = tape.constant(audio.reshape(&[batch, 1, samples])?);
        for i in 0..cfg.conv_dim.len() {
            let pre = format!("feature_extractor.conv_layers.{i}");
            let w = self.p(tape, &format!("{pre}.conv.weight"))?;
            let b = self.p_opt(tape, &format!("{pre}.conv.bias"));
            x = nn::conv1d(tape, &x, &w, b.as_ref(), cfg.conv_stride[i], 0, 1)
                .with_context(|| format!("conv layer {i}"))?;
            if cfg.feat_extract_norm == "layer" || i == 0 {
                let nw = self.p(tape, &format!("{pre}.layer_norm.weight"))?;
                let nb = self.p(tape, &format!("{pre}.layer_norm.bias"))?;
                x = if cfg.feat_extract_norm == "group" {
                    nn::group_norm(tape, &x, &nw, &nb, cfg.conv_dim[0], CONV_NORM_EPS)?
                } else {
                    let t = nn::transpose_last2(tape, &x)?;
                    let t = nn::layer_norm(tape, &t, &nw, &nb, CONV_NORM_EPS)?;
                    nn::transpose_last2(tape, &t)?
                };
            }
            x = nn::activation(tape, &x, cfg.feat_activation()?);
        }
        if let Some(m) = opts.feature_grad_mult {
            x = nn::grad_multiply(tape, &x, m);
        }
        let features = nn::transpose_last2(tape, &x)?; // [B, T, C]
        let frames = features.shape()[1];

        let (frame_lengths, frame_valid) =
            cfg.frame_validity(sample_mask, batch, samples, frames)?;

        // Feature projection.
        let mut h = features.clone();
        if cfg.feat_proj_layer_norm {
            let (w, b) = (
                self.p(tape, "feature_projection.layer_norm.weight")?,
                self.p(tape, "feature_projection.layer_norm.bias")?,
            );
            h = nn::layer_norm(tape, &h, &w, &b, cfg.layer_norm_eps)?;
        }
        let (w, b) = (
            self.p(tape, "feature_projection.projection.weight")?,
            self.p(tape, "feature_projection.projection.bias")?,
        );
        h = nn::linear(tape, &h, &w, Some(&b))?;
        h = dropout(tape, &h, cfg.feat_proj_dropout);
        if let Some(mask) = &opts.mask_time {
            let emb = self.p(tape, "masked_spec_embed")?;
            h = nn::replace_masked_frames(tape, &h, &emb, mask)?;
        }

        // Encoder: padded frames zeroed, then the positional conv embedding.
        if let Some(valid) = &frame_valid {
            h = nn::zero_invalid_frames(tape, &h, valid)?;
        }
        let pos = self.positional_embedding(tape, &h)?;
        h = nn::add(tape, &h, &pos)?;
        let mut hidden_states = Vec::with_capacity(cfg.num_hidden_layers + 1);
        let post_ln = !cfg.do_stable_layer_norm;
        if post_ln {
            let (w, b) = (
                self.p(tape, "encoder.layer_norm.weight")?,
                self.p(tape, "encoder.layer_norm.bias")?,
            );
            h = nn::layer_norm(tape, &h, &w, &b, cfg.layer_norm_eps)?;
        }
        h = dropout(tape, &h, cfg.hidden_dropout);
        let mut layer_rng = layerdrop_rng(opts.seed);
        for l in 0..cfg.num_hidden_layers {
            hidden_states.push(h.clone());
            if opts.train && cfg.layerdrop > 0.0 && (layer_rng.uniform() as f32) < cfg.layerdrop {
                continue;
            }
            // Attention-probability dropout: its own seed per (step, layer), mask regenerated in backward.
            let attn_drop = (opts.train && cfg.attention_dropout > 0.0).then(|| AttentionDropout {
                p: cfg.attention_dropout,
                seed: attention_dropout_seed(opts.seed, l),
            });
            h = self.layer(
                tape,
                l,
                &h,
                frame_valid.as_deref(),
                post_ln,
                attn_drop,
                &mut dropout,
            )?;
        }
        if !post_ln {
            let (w, b) = (
                self.p(tape, "encoder.layer_norm.weight")?,
                self.p(tape, "encoder.layer_norm.bias")?,
            );
            h = nn::layer_norm(tape, &h, &w, &b, cfg.layer_norm_eps)?;
        }
        hidden_states.push(h);
        Ok(MertOutput {
            hidden_states,
            features,
            frame_lengths,
        })
    }

    /// GELU(weight-normed grouped conv over time, last frame dropped when the kernel is even) of h [B, T, H].
    fn positional_embedding(&self, tape: &mut Tape, h: &Var) -> Result<Var> {
        let cfg = &self.config;
        let k = cfg.num_conv_pos_embeddings;
        let frames = h.shape()[1];
        let g = self.p(tape, POS_CONV_G)?;
        let v = self.p(tape, POS_CONV_V)?;
        let w = nn::weight_norm(tape, &g, &v, 2)?;
        let b = self.p(tape, "encoder.pos_conv_embed.conv.bias")?;
        let ht = nn::transpose_last2(tape, h)?;
        let mut p = nn::conv1d(
            tape,
            &ht,
            &w,
            Some(&b),
            1,
            k / 2,
            cfg.num_conv_pos_embedding_groups,
        )?;
        if p.shape()[2] != frames {
            p = nn::narrow_last(tape, &p, frames)?;
        }
        let p = nn::activation(tape, &p, self.config.feat_activation()?);
        nn::transpose_last2(tape, &p)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        tape: &mut Tape,
        l: usize,
        h: &Var,
        key_valid: Option<&[u8]>,
        post_ln: bool,
        attn_dropout: Option<AttentionDropout>,
        dropout: &mut impl FnMut(&mut Tape, &Var, f32) -> Var,
    ) -> Result<Var> {
        let cfg = &self.config;
        let pre = format!("encoder.layers.{l}");
        let ln1 = (
            self.p(tape, &format!("{pre}.layer_norm.weight"))?,
            self.p(tape, &format!("{pre}.layer_norm.bias"))?,
        );
        let ln2 = (
            self.p(tape, &format!("{pre}.final_layer_norm.weight"))?,
            self.p(tape, &format!("{pre}.final_layer_norm.bias"))?,
        );
        let attn_in = if post_ln {
            h.clone()
        } else {
            nn::layer_norm(tape, h, &ln1.0, &ln1.1, cfg.layer_norm_eps)?
        };
        let proj = |tape: &mut Tape, x: &Var, name: &str| -> Result<Var> {
            let w = self.p(tape, &format!("{pre}.{name}.weight"))?;
            let b = self.p(tape, &format!("{pre}.{name}.bias"))?;
            nn::linear(tape, x, &w, Some(&b))
        };
        let q = proj(tape, &attn_in, "attention.q_proj")?;
        let k = proj(tape, &attn_in, "attention.k_proj")?;
        let v = proj(tape, &attn_in, "attention.v_proj")?;
        let scale = (cfg.head_dim() as f32).powf(-0.5);
        // HF's attention_dropout on the softmax probabilities is applied inside the fused op.
        let a = nn::attention(
            tape,
            &q,
            &k,
            &v,
            cfg.num_attention_heads,
            key_valid,
            scale,
            attn_dropout,
        )?;
        let a = proj(tape, &a, "attention.out_proj")?;
        let a = dropout(tape, &a, cfg.hidden_dropout);
        let mut h = nn::add(tape, h, &a)?;
        if post_ln {
            h = nn::layer_norm(tape, &h, &ln1.0, &ln1.1, cfg.layer_norm_eps)?;
        }
        let ff_in = if post_ln {
            h.clone()
        } else {
            nn::layer_norm(tape, &h, &ln2.0, &ln2.1, cfg.layer_norm_eps)?
        };
        let f = proj(tape, &ff_in, "feed_forward.intermediate_dense")?;
        let f = nn::activation(tape, &f, cfg.hidden_activation()?);
        let f = dropout(tape, &f, cfg.activation_dropout);
        let f = proj(tape, &f, "feed_forward.output_dense")?;
        let f = dropout(tape, &f, cfg.hidden_dropout);
        h = nn::add(tape, &h, &f)?;
        if post_ln {
            h = nn::layer_norm(tape, &h, &ln2.0, &ln2.1, cfg.layer_norm_eps)?;
        }
        Ok(h)
    }
}
