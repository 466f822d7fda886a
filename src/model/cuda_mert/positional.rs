//! The positional conv embedding on the device, forward and backward side by side: the activation (GELU
//! for MERT) of a grouped, weight-normed conv (kernel 128, 16 groups for MERT-v1-95M) added to its input;
//! for an even kernel the last output frame is dropped. See docs/model.md.

use anyhow::{ensure, Context, Result};

use super::{Buf, CudaMert};
use crate::cuda::{activation, conv1d, elementwise, layout, weight_norm};
use crate::model::weights::{POS_CONV_G, POS_CONV_V};
use crate::ops::conv1d::Conv1dShape;

/// What the positional conv's backward needs.
pub(super) struct PositionalSaved {
    /// The encoder input transposed to [B, H, T] (the conv input).
    pub input: Buf,
    /// Weight-normed conv weight and the norms of v.
    pub weight: Buf,
    pub norms: Buf,
    /// The narrowed conv output [B, H, T] (activation input).
    pub conv: Buf,
}

impl CudaMert {
    /// h [B, T, H] -> h + act(pos_conv(h)), and what backward needs.
    pub(super) fn positional_forward(
        &self,
        h: &Buf,
        batch: usize,
        frames: usize,
    ) -> Result<(Buf, PositionalSaved)> {
        let dev = &self.dev;
        let hidden = self.config.hidden_size;
        let pos_in = self.transposed(h, batch, frames, hidden)?;
        let (pos_weight, pos_norms) = self.positional_weight()?;
        let pshape = self.pos_conv_shape(batch, frames);
        let mut pconv = dev.alloc(batch * hidden * pshape.out_len())?;
        let bias = self.params.id("encoder.pos_conv_embed.conv.bias")?;
        conv1d::conv1d_forward(
            dev,
            &mut pconv,
            &pos_in,
            &pos_weight,
            Some(&self.params.values[bias]),
            &pshape,
        )
        .context("positional conv")?;
        let pos_conv = if pshape.out_len() != frames {
            let mut n = dev.alloc(batch * hidden * frames)?;
            layout::narrow_last(
                dev,
                &mut n,
                &pconv,
                batch * hidden,
                pshape.out_len(),
                frames,
            )?;
            n
        } else {
            pconv
        };
        let act = self.config.feat_activation()?;
        let pos = self.transposed(&self.activation(act, &pos_conv)?, batch, hidden, frames)?;
        let mut sum = dev.alloc(h.len())?;
        elementwise::add(dev, &mut sum, h, &pos)?;
        let saved = PositionalSaved {
            input: pos_in,
            weight: pos_weight,
            norms: pos_norms,
            conv: pos_conv,
        };
        Ok((sum, saved))
    }

    /// Adds the conv path's gradient to d(h) [B, T, H] (which already holds the residual's) and
    /// accumulates the conv's parameter gradients.
    pub(super) fn positional_backward(
        &mut self,
        d: &mut Buf,
        saved: PositionalSaved,
        batch: usize,
        frames: usize,
    ) -> Result<()> {
        let dev = self.dev.clone();
        let hidden = self.config.hidden_size;
        let rows = batch * frames;
        let d_pos = self.transposed(d, batch, frames, hidden)?;
        let mut d_pos_conv = self.zeros(d_pos.len())?;
        let act = self.config.feat_activation()?;
        activation::activation_backward(&dev, act, &mut d_pos_conv, &d_pos, &saved.conv)?;
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
            Some(self.zeros(saved.weight.len())?)
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
                &saved.input,
                &saved.weight,
                &pshape,
            )
            .context("positional conv backward")?;
        }
        drop((d_pos_conv, saved.input, saved.conv));
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
                &saved.norms,
                dims,
                2,
            )
            .context("positional conv weight norm backward")?;
        }
        layout::transpose_last2(&dev, d, &d_pos_in, batch, hidden, frames, true)?;
        Ok(())
    }

    pub(super) fn pos_conv_shape(&self, batch: usize, frames: usize) -> Conv1dShape {
        let cfg = &self.config;
        let k = cfg.num_conv_pos_embeddings;
        Conv1dShape {
            batch,
            in_channels: cfg.hidden_size,
            out_channels: cfg.hidden_size,
            in_len: frames,
            kernel: k,
            stride: 1,
            padding: k / 2,
            groups: cfg.num_conv_pos_embedding_groups,
        }
    }

    /// w = g * v / ||v|| over dims (0, 1) per kernel tap (torch weight_norm, dim = 2).
    fn positional_weight(&self) -> Result<(Buf, Buf)> {
        let p = &self.params;
        let (g, v) = (p.id(POS_CONV_G)?, p.id(POS_CONV_V)?);
        let dims = pos_dims(&p.shapes[v])?;
        let mut w = self.dev.alloc(p.values[v].len())?;
        let mut norms = self.dev.alloc(dims[2])?;
        weight_norm::weight_norm_forward(
            &self.dev,
            &mut w,
            &mut norms,
            &p.values[g],
            &p.values[v],
            dims,
            2,
        )?;
        Ok((w, norms))
    }
}

pub(super) fn pos_dims(shape: &[usize]) -> Result<[usize; 3]> {
    ensure!(
        shape.len() == 3,
        "positional conv weight_v has shape {shape:?}"
    );
    Ok([shape[0], shape[1], shape[2]])
}
