//! The backward pass on the device: the forward's saved activations walked in reverse, each freed once
//! used; parameter gradients accumulate into `CudaParams::grads` (so micro-batches accumulate too).

use anyhow::{ensure, Context, Result};

use super::forward::{pos_dims, ConvNorm, CudaForward};
use super::{Buf, CudaMert};
use crate::cuda::{conv1d, elementwise, gelu, group_norm, layout, weight_norm};
use crate::model::weights::{POS_CONV_G, POS_CONV_V};

impl CudaMert {
    /// Backward from the seeds `d_hidden` (one per hidden state, None = zero) and `d_features`
    /// (gradient of the conv features [B, T, C], e.g. from the feature penalty), consuming `fwd`.
    pub fn backward(
        &mut self,
        fwd: CudaForward,
        mut d_hidden: Vec<Option<Buf>>,
        d_features: Option<Buf>,
    ) -> Result<()> {
        let cfg = self.config.clone();
        let dev = self.dev.clone();
        let CudaForward {
            hidden_states: mut hs,
            features,
            batch,
            frames,
            frame_valid,
            opts,
            saved,
            ..
        } = fwd;
        let mut s = saved.context("backward needs a forward run with record = true")?;
        let n_layers = cfg.num_hidden_layers;
        ensure!(
            d_hidden.len() == n_layers + 1,
            "backward: {} hidden-state gradients for {} hidden states",
            d_hidden.len(),
            n_layers + 1
        );
        let (rows, hidden) = (batch * frames, cfg.hidden_size);
        for (i, d) in d_hidden.iter().enumerate() {
            if let Some(d) = d {
                ensure!(
                    d.len() == rows * hidden,
                    "hidden-state gradient {i} has {} values",
                    d.len()
                );
            }
        }
        let train = opts.train;

        // Encoder, top down.
        let mut d = match d_hidden[n_layers].take() {
            Some(d) => d,
            None => self.zeros(rows * hidden)?,
        };
        hs.pop();
        if let Some((x, m, r)) = s.final_ln.take() {
            let mut dx = self.zeros(rows * hidden)?;
            self.layer_norm_backward("encoder.layer_norm", &mut dx, &d, &x, &m, &r)?;
            d = dx;
        }
        for l in (0..n_layers).rev() {
            let h = hs.pop().expect("one hidden state per layer input");
            if let Some(saved) = s.layers[l].take() {
                d = self.layer_backward(
                    l,
                    saved,
                    &h,
                    d,
                    batch,
                    frames,
                    frame_valid.as_ref(),
                    train,
                )?;
            }
            if let Some(seed) = d_hidden[l].take() {
                layout::add_scaled(&dev, &mut d, &seed, 1.0)?;
            }
        }
        d = self.dropout_backward(d, cfg.hidden_dropout, s.enc_dropout_seed, train)?;
        if let Some((x, m, r)) = s.enc_ln.take() {
            let mut dx = self.zeros(rows * hidden)?;
            self.layer_norm_backward("encoder.layer_norm", &mut dx, &d, &x, &m, &r)?;
            d = dx;
        }

        // Positional conv: d(h) gets the residual gradient plus the conv path's.
        let d_pos = self.transposed(&d, batch, frames, hidden)?;
        let mut d_pos_conv = self.zeros(d_pos.len())?;
        gelu::gelu_backward(&dev, &mut d_pos_conv, &d_pos, &s.pos_conv)?;
        drop(d_pos);
        let pshape = self.pos_conv_shape(batch, frames);
        if pshape.out_len() != frames {
            let mut full = self.zeros(batch * hidden * pshape.out_len())?;
            layout::narrow_last_backward(
                &dev,
                &mut full,
                &d_pos_conv,
                batch * hidden,
                pshape.out_len(),
                frames,
            )?;
            d_pos_conv = full;
        }
        let (g, v) = (self.params.id(POS_CONV_G)?, self.params.id(POS_CONV_V)?);
        let bias = self.params.id("encoder.pos_conv_embed.conv.bias")?;
        let need_w = self.params.is_trainable(g) || self.params.is_trainable(v);
        let mut d_pos_in = self.zeros(rows * hidden)?;
        let mut d_weight = if need_w {
            Some(self.zeros(s.pos_weight.len())?)
        } else {
            None
        };
        {
            let (_, d_bias, _) = self.params.value_and_grads(bias, None);
            conv1d::conv1d_backward(
                &dev,
                Some(&mut d_pos_in),
                d_weight.as_mut(),
                d_bias,
                &d_pos_conv,
                &s.pos_in,
                &s.pos_weight,
                &pshape,
            )
            .context("positional conv backward")?;
        }
        drop((d_pos_conv, s.pos_in, s.pos_conv));
        if let Some(dw) = d_weight {
            let dims = pos_dims(&self.params.shapes[v])?;
            let p = &mut self.params;
            let [dg, dv] = p.grads.get_disjoint_mut([g, v]).expect("distinct ids");
            weight_norm::weight_norm_backward(
                &dev,
                dg.as_mut(),
                dv.as_mut(),
                &dw,
                &p.values[g],
                &p.values[v],
                &s.pos_norms,
                dims,
                2,
            )
            .context("positional conv weight norm backward")?;
        }
        layout::transpose_last2(&dev, &mut d, &d_pos_in, batch, hidden, frames, true)?;
        drop(d_pos_in);

        // Masking, projection dropout, projection and its LayerNorm.
        if let Some(valid) = &frame_valid {
            let mut dx = self.zeros(d.len())?;
            layout::mask_rows(&dev, &mut dx, &d, valid, rows, hidden, true)?;
            d = dx;
        }
        if let Some(mask) = &s.mask_time {
            let emb = self.params.id("masked_spec_embed")?;
            let mut dx = self.zeros(d.len())?;
            let demb = self.params.grads[emb].as_mut();
            layout::replace_masked_rows_backward(
                &dev,
                Some(&mut dx),
                demb,
                &d,
                mask,
                rows,
                hidden,
            )?;
            d = dx;
        }
        d = self.dropout_backward(d, cfg.feat_proj_dropout, s.proj_dropout_seed, train)?;
        let conv_ch = features.len() / rows;
        let mut d_proj_in = self.zeros(rows * conv_ch)?;
        let proj_in = s.proj_ln.as_ref().map(|t| &t.0).unwrap_or(&features);
        self.linear_backward(
            "feature_projection.projection",
            Some(&mut d_proj_in),
            &d,
            proj_in,
            rows,
        )?;
        drop(d);
        let mut d_feat = match s.proj_ln.take() {
            Some((_, m, r)) => {
                let mut dx = self.zeros(rows * conv_ch)?;
                self.layer_norm_backward(
                    "feature_projection.layer_norm",
                    &mut dx,
                    &d_proj_in,
                    &features,
                    &m,
                    &r,
                )?;
                dx
            }
            None => d_proj_in,
        };
        if let Some(seed) = &d_features {
            ensure!(
                seed.len() == d_feat.len(),
                "feature gradient has {} values",
                seed.len()
            );
            layout::add_scaled(&dev, &mut d_feat, seed, 1.0)?;
        }
        drop(features);
        self.conv_stack_backward(
            s.convs,
            s.audio,
            d_feat,
            batch,
            frames,
            opts.feature_grad_mult,
        )
    }

    /// Backward through the conv stack from d(features) [B, T, C]; stops as soon as no layer below
    /// has a trainable parameter (a frozen feature extractor costs nothing).
    fn conv_stack_backward(
        &mut self,
        mut convs: Vec<super::forward::ConvSaved>,
        audio: Buf,
        d_feat: Buf,
        batch: usize,
        frames: usize,
        grad_mult: Option<f32>,
    ) -> Result<()> {
        let dev = self.dev.clone();
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
            let mut d_gelu_in = self.zeros(dx.len())?;
            gelu::gelu_backward(
                &dev,
                &mut d_gelu_in,
                &dx,
                c.gelu_in.as_ref().unwrap_or(&c.conv_out),
            )?;
            drop(dx);
            let (ch, len) = (c.shape.out_channels, c.shape.out_len());
            let d_conv = match &c.norm {
                ConvNorm::None => d_gelu_in,
                ConvNorm::Group { mean, rstd } => {
                    let mut d = self.zeros(d_gelu_in.len())?;
                    let w = self.params.id(&format!("{pre}.layer_norm.weight"))?;
                    let b = self.params.id(&format!("{pre}.layer_norm.bias"))?;
                    let (weight, dw, db) = self.params.value_and_grads(w, Some(b));
                    group_norm::group_norm_backward(
                        &dev,
                        Some(&mut d),
                        dw,
                        db,
                        &d_gelu_in,
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
                    let d_t = self.transposed(&d_gelu_in, batch, ch, len)?;
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

    /// x [B, R, C] -> [B, C, R] in a new buffer.
    pub(super) fn transposed(
        &self,
        x: &Buf,
        batch: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Buf> {
        let mut out = self.dev.alloc(x.len())?;
        layout::transpose_last2(&self.dev, &mut out, x, batch, rows, cols, false)?;
        Ok(out)
    }
}
