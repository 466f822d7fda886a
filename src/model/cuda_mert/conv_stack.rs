//! The waveform feature extractor on the device, forward and backward side by side: seven strided convs,
//! each followed by the config's activation (GELU for MERT), with GroupNorm after the first (MERT-v1-95M)
//! or LayerNorm over channels after every one (the 330M form). See docs/model.md.

use anyhow::{Context, Result};

use super::{Buf, CudaMert};
use crate::cuda::{activation, conv1d, elementwise, group_norm};
use crate::model::contract::CONV_NORM_EPS;
use crate::ops::conv1d::Conv1dShape;

/// Normalisation of one conv layer, with what its backward needs.
pub(super) enum ConvNorm {
    None,
    /// GroupNorm over [B, C, T] (MERT-v1-95M layer 0); input = the conv output.
    Group {
        mean: Buf,
        rstd: Buf,
    },
    /// LayerNorm over channels: the conv output transposed to [B, T, C] is its input.
    Layer {
        input: Buf,
        mean: Buf,
        rstd: Buf,
    },
}

pub(super) struct ConvSaved {
    pub shape: Conv1dShape,
    /// The layer's input (the previous activation output); None for layer 0, whose input is the audio.
    pub input: Option<Buf>,
    /// The conv output [B, C, T] (GroupNorm input; the activation input when there is no norm).
    pub conv_out: Buf,
    pub norm: ConvNorm,
    /// The activation input when a norm precedes it.
    pub act_in: Option<Buf>,
}

impl CudaMert {
    /// The feature extractor on `audio` [B, L]: the last activation output [B, C, T] and, when `record`, what
    /// backward needs per layer.
    pub(super) fn conv_stack_forward(
        &self,
        audio: &Buf,
        batch: usize,
        samples: usize,
        record: bool,
    ) -> Result<(Buf, Vec<ConvSaved>)> {
        let cfg = &self.config;
        let dev = &self.dev;
        let act = cfg.feat_activation()?;
        let mut convs = Vec::new();
        let mut x_len = samples;
        let mut in_ch = 1;
        let mut x: Option<Buf> = None;
        for i in 0..cfg.conv_dim.len() {
            let pre = format!("feature_extractor.conv_layers.{i}");
            let shape = Conv1dShape {
                batch,
                in_channels: in_ch,
                out_channels: cfg.conv_dim[i],
                in_len: x_len,
                kernel: cfg.conv_kernel[i],
                stride: cfg.conv_stride[i],
                padding: 0,
                groups: 1,
            };
            let (t, c) = (shape.out_len(), shape.out_channels);
            let p = &self.params;
            let w = p.id(&format!("{pre}.conv.weight"))?;
            let b = p.id_opt(&format!("{pre}.conv.bias"));
            let input = x.take(); // None: layer 0 reads the audio
            let mut conv_out = dev.alloc(batch * c * t)?;
            conv1d::conv1d_forward(
                dev,
                &mut conv_out,
                input.as_ref().unwrap_or(audio),
                &p.values[w],
                b.map(|b| &p.values[b]),
                &shape,
            )
            .with_context(|| format!("conv layer {i}"))?;
            let norm_name = format!("{pre}.layer_norm");
            let (norm, act_in) = if cfg.feat_extract_norm == "layer" {
                let tin = self.transposed(&conv_out, batch, c, t)?;
                let (n, mean, rstd) =
                    self.layer_norm(&tin, batch * t, &norm_name, CONV_NORM_EPS)?;
                let back = self.transposed(&n, batch, t, c)?;
                (
                    ConvNorm::Layer {
                        input: tin,
                        mean,
                        rstd,
                    },
                    Some(back),
                )
            } else if i == 0 {
                let (w, b) = (
                    p.id(&format!("{norm_name}.weight"))?,
                    p.id(&format!("{norm_name}.bias"))?,
                );
                let mut out = dev.alloc(conv_out.len())?;
                let mut mean = dev.alloc(batch * c)?;
                let mut rstd = dev.alloc(batch * c)?;
                group_norm::group_norm_forward(
                    dev,
                    &mut out,
                    &mut mean,
                    &mut rstd,
                    &conv_out,
                    &p.values[w],
                    &p.values[b],
                    batch,
                    c,
                    t,
                    c,
                    CONV_NORM_EPS,
                )?;
                (ConvNorm::Group { mean, rstd }, Some(out))
            } else {
                (ConvNorm::None, None)
            };
            x = Some(self.activation(act, act_in.as_ref().unwrap_or(&conv_out))?);
            if record {
                convs.push(ConvSaved {
                    shape,
                    input,
                    conv_out,
                    norm,
                    act_in,
                });
            }
            x_len = t;
            in_ch = c;
        }
        Ok((x.expect("at least one conv layer"), convs))
    }

    /// Backward through the conv stack from d(features) [B, T, C]; stops as soon as no layer below
    /// has a trainable parameter (a frozen feature extractor costs nothing).
    pub(super) fn conv_stack_backward(
        &mut self,
        mut convs: Vec<ConvSaved>,
        audio: Buf,
        d_feat: Buf,
        batch: usize,
        frames: usize,
        grad_mult: Option<f32>,
    ) -> Result<()> {
        let dev = self.dev.clone();
        let act = self.config.feat_activation()?;
        let n = convs.len();
        let trainable_upto: Vec<bool> =
            (0..n)
                .scan(false, |any, i| {
                    let pre = format!("feature_extractor.conv_layers.{i}.");
                    *any |=
                        self.params.names.iter().enumerate().any(|(id, name)| {
                            name.starts_with(&pre) && self.params.is_trainable(id)
                        });
                    Some(*any)
                })
                .collect();
        if !trainable_upto[n - 1] {
            return Ok(());
        }
        let conv_ch = d_feat.len() / (batch * frames);
        let mut dx = self.transposed(&d_feat, batch, frames, conv_ch)?;
        drop(d_feat);
        if let Some(m) = grad_mult {
            let mut scaled = dev.alloc(dx.len())?;
            elementwise::scale(&dev, &mut scaled, &dx, m)?;
            dx = scaled;
        }
        for i in (0..n).rev() {
            let c = convs.pop().expect("one saved entry per conv layer");
            let pre = format!("feature_extractor.conv_layers.{i}");
            let mut d_act_in = self.zeros(dx.len())?;
            activation::activation_backward(
                &dev,
                act,
                &mut d_act_in,
                &dx,
                c.act_in.as_ref().unwrap_or(&c.conv_out),
            )?;
            drop(dx);
            let (ch, len) = (c.shape.out_channels, c.shape.out_len());
            let d_conv = match &c.norm {
                ConvNorm::None => d_act_in,
                ConvNorm::Group { mean, rstd } => {
                    let mut d = self.zeros(d_act_in.len())?;
                    let w = self.params.id(&format!("{pre}.layer_norm.weight"))?;
                    let b = self.params.id(&format!("{pre}.layer_norm.bias"))?;
                    let (weight, dw, db) = self.params.value_and_grads(w, Some(b));
                    group_norm::group_norm_backward(
                        &dev,
                        Some(&mut d),
                        dw,
                        db,
                        &d_act_in,
                        &c.conv_out,
                        weight,
                        mean,
                        rstd,
                        batch,
                        ch,
                        len,
                        ch,
                    )
                    .with_context(|| format!("{pre}.layer_norm backward"))?;
                    d
                }
                ConvNorm::Layer { input, mean, rstd } => {
                    let d_t = self.transposed(&d_act_in, batch, ch, len)?;
                    let mut d_in = self.zeros(d_t.len())?;
                    self.layer_norm_backward(
                        &format!("{pre}.layer_norm"),
                        &mut d_in,
                        &d_t,
                        input,
                        mean,
                        rstd,
                    )?;
                    self.transposed(&d_in, batch, len, ch)?
                }
            };
            let need_dx = i > 0 && trainable_upto[i - 1];
            let input = c.input.as_ref().unwrap_or(&audio);
            let mut d_in = if need_dx {
                Some(self.zeros(input.len())?)
            } else {
                None
            };
            let w = self.params.id(&format!("{pre}.conv.weight"))?;
            let b = self.params.id_opt(&format!("{pre}.conv.bias"));
            let (weight, dw, db) = self.params.value_and_grads(w, b);
            conv1d::conv1d_backward(
                &dev,
                d_in.as_mut(),
                dw,
                db,
                &d_conv,
                input,
                weight,
                &c.shape,
            )
            .with_context(|| format!("conv layer {i} backward"))?;
            match d_in {
                Some(d) => dx = d,
                None => break,
            }
        }
        Ok(())
    }
}
