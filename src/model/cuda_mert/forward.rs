//! The forward pass on the device and the activations it keeps for backward.

use anyhow::{ensure, Context, Result};

use super::conv_stack::ConvSaved;
use super::positional::PositionalSaved;
use super::{Buf, CudaMert};
use crate::cuda::tensor_core;
use crate::cuda::{activation, dropout, gemm, layer_norm, layout};
use crate::device::{CudaDevice, DeviceBuffer};
use crate::model::contract::{attention_dropout_seed, layerdrop_rng, DropoutSeeds};
use crate::model::mert::ForwardOptions;
use crate::ops::activation::Activation;
use crate::ops::attention::AttentionDropout;

/// One encoder layer's saved activations (post-LN and pre-LN forms share the struct).
pub(super) struct LayerSaved {
    /// Pre-LN: LayerNorm(h) fed to q/k/v, with its stats; post-LN: None (q/k/v read the layer input).
    pub attn_in: Option<(Buf, Buf, Buf)>,
    pub q: Buf,
    pub k: Buf,
    pub v: Buf,
    pub attn: Buf,
    pub lse: Buf,
    pub attn_dropout: Option<AttentionDropout>,
    /// h + dropout(out_proj(attn)).
    pub resid1: Buf,
    /// Post-LN: LayerNorm(resid1) (the FFN input and its residual); pre-LN: LayerNorm2(resid1).
    pub ffn_in: Buf,
    pub ffn_in_stats: (Buf, Buf),
    /// intermediate_dense output (the activation input) and the dropped-out activation output (output_dense input).
    pub inter: Buf,
    pub act: Buf,
    /// Post-LN only: ffn_in + dropout(output_dense(act)), the final LayerNorm's input, and its stats.
    pub resid2: Option<(Buf, Buf, Buf)>,
    /// Seeds of the hidden dropout after out_proj, the activation dropout and the FFN hidden dropout.
    pub seeds: [u64; 3],
}

pub(super) struct Saved {
    pub audio: Buf,
    pub convs: Vec<ConvSaved>,
    /// feature_projection.layer_norm output and stats, when the config has it.
    pub proj_ln: Option<(Buf, Buf, Buf)>,
    pub proj_dropout_seed: u64,
    pub mask_time: Option<DeviceBuffer<u8>>,
    /// The positional conv embedding's input, weight and output.
    pub positional: PositionalSaved,
    /// Post-LN: encoder.layer_norm input and stats.
    pub enc_ln: Option<(Buf, Buf, Buf)>,
    pub enc_dropout_seed: u64,
    /// Per layer; None when LayerDrop skipped it.
    pub layers: Vec<Option<LayerSaved>>,
    /// Pre-LN: the last layer's output (final encoder LayerNorm input) and stats.
    pub final_ln: Option<(Buf, Buf, Buf)>,
}

/// What a forward pass returns: the hidden states and, when recording, the activations for backward.
pub struct CudaForward {
    /// num_hidden_layers + 1 tensors [B, T, H], as transformers returns them.
    pub hidden_states: Vec<Buf>,
    /// Conv-stack output [B, T, C] (before the projection LayerNorm).
    pub features: Buf,
    pub frame_lengths: Vec<usize>,
    pub batch: usize,
    pub frames: usize,
    pub(super) frame_valid: Option<DeviceBuffer<u8>>,
    pub(super) opts: ForwardOptions,
    pub(super) saved: Option<Saved>,
}

impl CudaForward {
    /// Copies hidden state `i` to the host.
    pub fn hidden_state(&self, dev: &CudaDevice, i: usize) -> Result<Vec<f32>> {
        let h = self
            .hidden_states
            .get(i)
            .with_context(|| format!("no hidden state {i}"))?;
        dev.dtoh(h)
    }
}

/// Layer inputs, saved activations per layer (None when LayerDrop skipped it), and the last output.
type LayersForward = (Vec<Buf>, Vec<Option<LayerSaved>>, Buf);

impl CudaMert {
    /// Applies dropout in place of `x` (a new buffer) when training with p > 0; else returns `x`.
    pub(super) fn dropout(&self, x: Buf, p: f32, seed: u64, train: bool) -> Result<Buf> {
        if !train || p == 0.0 {
            return Ok(x);
        }
        let mut out = self.dev.alloc(x.len())?;
        dropout::dropout_forward(&self.dev, &mut out, &x, x.len(), p, seed)?;
        Ok(out)
    }

    /// nn.Linear `name` on x [rows, in]: a new [rows, out] buffer (sizes from the weight's shape).
    pub fn linear(&self, x: &Buf, rows: usize, name: &str) -> Result<Buf> {
        let p = &self.params;
        let (w, b, in_f, out_f) = p.linear_ids(name)?;
        let mut out = self.dev.alloc(rows * out_f)?;
        let (weight, bias) = (&p.values[w], b.map(|b| &p.values[b]));
        match self.precision.half() {
            None => gemm::linear_forward(&self.dev, &mut out, x, weight, bias, rows, in_f, out_f),
            Some(kind) => tensor_core::linear_forward_tc(
                &self.dev, kind, &mut out, x, weight, bias, rows, in_f, out_f,
            ),
        }
        .with_context(|| format!("{name} forward"))?;
        Ok(out)
    }

    /// LayerNorm over the last dim of x [rows, cols]: (out, mean, rstd).
    pub(super) fn layer_norm(
        &self,
        x: &Buf,
        rows: usize,
        name: &str,
        eps: f32,
    ) -> Result<(Buf, Buf, Buf)> {
        let p = &self.params;
        let (w, b) = (
            p.id(&format!("{name}.weight"))?,
            p.id(&format!("{name}.bias"))?,
        );
        let cols = x.len() / rows.max(1);
        let mut out = self.dev.alloc(x.len())?;
        let mut mean = self.dev.alloc(rows)?;
        let mut rstd = self.dev.alloc(rows)?;
        layer_norm::layer_norm_forward(
            &self.dev,
            &mut out,
            &mut mean,
            &mut rstd,
            x,
            &p.values[w],
            &p.values[b],
            rows,
            cols,
            eps,
        )
        .with_context(|| format!("{name} forward"))?;
        Ok((out, mean, rstd))
    }

    /// f(x) in a new buffer, f the config's activation `act`.
    pub(super) fn activation(&self, act: Activation, x: &Buf) -> Result<Buf> {
        let mut out = self.dev.alloc(x.len())?;
        activation::activation_forward(&self.dev, act, &mut out, x)?;
        Ok(out)
    }

    /// Forward `audio` [batch, samples] (row-major). `sample_mask` [batch*samples] marks real samples as
    /// transformers' attention_mask does. `record` keeps the activations for [`CudaMert::backward`].
    pub fn forward(
        &self,
        audio: &[f32],
        batch: usize,
        samples: usize,
        sample_mask: Option<&[u8]>,
        opts: &ForwardOptions,
        record: bool,
    ) -> Result<CudaForward> {
        let cfg = &self.config;
        let dev = &self.dev;
        ensure!(
            audio.len() == batch * samples && batch > 0,
            "audio has {} samples for a batch of {batch} x {samples}",
            audio.len()
        );
        ensure!(
            samples >= cfg.min_samples(),
            "audio of {samples} samples is shorter than the model's receptive field ({} samples)",
            cfg.min_samples()
        );
        let train = opts.train;
        let mut seeds = DropoutSeeds::new(opts.seed);
        let audio_buf = dev.htod(audio)?;

        // Feature extractor: [B, 1, L] -> [B, C, T] -> features [B, T, C].
        let (conv_last, convs) = self.conv_stack_forward(&audio_buf, batch, samples, record)?;
        let conv_ch = *cfg.conv_dim.last().expect("at least one conv layer");
        let frames = conv_last.len() / (batch * conv_ch);
        let features = self.transposed(&conv_last, batch, conv_ch, frames)?; // [B, T, C]

        let (frame_lengths, frame_valid) =
            cfg.frame_validity(sample_mask, batch, samples, frames)?;
        let frame_valid = frame_valid.map(|v| dev.htod(&v)).transpose()?;

        // Feature projection.
        let rows = batch * frames;
        let hidden = cfg.hidden_size;
        let proj_ln = if cfg.feat_proj_layer_norm {
            Some(self.layer_norm(
                &features,
                rows,
                "feature_projection.layer_norm",
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        let proj_in = proj_ln.as_ref().map(|t| &t.0).unwrap_or(&features);
        let h = self.linear(proj_in, rows, "feature_projection.projection")?;
        let proj_dropout_seed = seeds.next_seed();
        let mut h = self.dropout(h, cfg.feat_proj_dropout, proj_dropout_seed, train)?;
        let mask_time = match &opts.mask_time {
            None => None,
            Some(mask) => {
                ensure!(
                    mask.len() == rows,
                    "mask_time has {} entries for {batch}x{frames} frames",
                    mask.len()
                );
                let m = dev.htod(mask)?;
                let emb = self.params.id("masked_spec_embed")?;
                let mut out = dev.alloc(h.len())?;
                layout::replace_masked_rows_forward(
                    dev,
                    &mut out,
                    &h,
                    &self.params.values[emb],
                    &m,
                    rows,
                    hidden,
                )?;
                h = out;
                Some(m)
            }
        };
        if let Some(valid) = &frame_valid {
            let mut out = dev.alloc(h.len())?;
            layout::mask_rows(dev, &mut out, &h, valid, rows, hidden, false)?;
            h = out;
        }

        // Positional conv embedding: h + act(weight-normed grouped conv of h).
        let (h2, pos) = self.positional_forward(&h, batch, frames)?;
        drop(h);
        let post_ln = !cfg.do_stable_layer_norm;
        let (mut h, enc_ln) = if post_ln {
            let (out, mean, rstd) =
                self.layer_norm(&h2, rows, "encoder.layer_norm", cfg.layer_norm_eps)?;
            (out, Some((h2, mean, rstd)))
        } else {
            (h2, None)
        };
        let enc_dropout_seed = seeds.next_seed();
        h = self.dropout(h, cfg.hidden_dropout, enc_dropout_seed, train)?;

        let (mut hidden_states, layers, mut h) = self.layers_forward(
            h,
            batch,
            frames,
            frame_valid.as_ref(),
            opts,
            &mut seeds,
            record,
        )?;
        let final_ln = if post_ln {
            None
        } else {
            let (out, mean, rstd) =
                self.layer_norm(&h, rows, "encoder.layer_norm", cfg.layer_norm_eps)?;
            Some((std::mem::replace(&mut h, out), mean, rstd))
        };
        hidden_states.push(h);

        let saved = record.then(|| Saved {
            audio: audio_buf,
            convs,
            proj_ln,
            proj_dropout_seed,
            mask_time,
            positional: pos,
            enc_ln,
            enc_dropout_seed,
            layers,
            final_ln,
        });
        Ok(CudaForward {
            hidden_states,
            features,
            frame_lengths,
            batch,
            frames,
            frame_valid,
            opts: opts.clone(),
            saved,
        })
    }

    /// The transformer layers on h [B, T, H] with LayerDrop: (each layer's input, per layer what
    /// backward needs or None when dropped, the last layer's output).
    #[allow(clippy::too_many_arguments)]
    fn layers_forward(
        &self,
        mut h: Buf,
        batch: usize,
        frames: usize,
        key_valid: Option<&DeviceBuffer<u8>>,
        opts: &ForwardOptions,
        seeds: &mut DropoutSeeds,
        record: bool,
    ) -> Result<LayersForward> {
        let (cfg, dev, train) = (&self.config, &self.dev, opts.train);
        let mut hidden_states: Vec<Buf> = Vec::with_capacity(cfg.num_hidden_layers + 1);
        let mut layers: Vec<Option<LayerSaved>> = Vec::with_capacity(cfg.num_hidden_layers);
        let mut layer_rng = layerdrop_rng(opts.seed);
        for l in 0..cfg.num_hidden_layers {
            if train && cfg.layerdrop > 0.0 && (layer_rng.uniform() as f32) < cfg.layerdrop {
                let mut copy = dev.alloc(h.len())?;
                layout::copy(dev, &mut copy, &h)?;
                hidden_states.push(std::mem::replace(&mut h, copy));
                layers.push(None);
                continue;
            }
            let attn_dropout = (train && cfg.attention_dropout > 0.0).then(|| AttentionDropout {
                p: cfg.attention_dropout,
                seed: attention_dropout_seed(opts.seed, l),
            });
            let layer_seeds = [seeds.next_seed(), seeds.next_seed(), seeds.next_seed()];
            let (out, saved) = self.layer_forward(
                l,
                &h,
                batch,
                frames,
                key_valid,
                attn_dropout,
                layer_seeds,
                train,
                record,
            )?;
            hidden_states.push(std::mem::replace(&mut h, out));
            layers.push(saved);
        }
        Ok((hidden_states, layers, h))
    }
}
