//! The backward pass on the device: the forward's saved activations walked in reverse, each freed once
//! used; parameter gradients accumulate into `CudaParams::grads` (so micro-batches accumulate too).

use anyhow::{ensure, Context, Result};

use super::forward::CudaForward;
use super::{Buf, CudaMert};
use crate::cuda::layout;

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
        self.positional_backward(&mut d, s.positional, batch, frames)?;

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
