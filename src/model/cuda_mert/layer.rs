//! One encoder layer on the device, forward and backward side by side (post-LN for MERT-v1-95M,
//! pre-LN for the 330M form), plus the linear/LayerNorm/dropout backward helpers the model shares.

use anyhow::{Context, Result};

use super::forward::LayerSaved;
use super::{Buf, CudaMert};
use crate::cuda::tensor_core::HalfKind;
use crate::cuda::{
    activation, attention, attention_tc, dropout, elementwise, gemm, layer_norm, layout,
    tensor_core,
};
use crate::device::DeviceBuffer;
use crate::ops::attention::{AttentionDropout, AttentionShape};

impl CudaMert {
    fn attention_shape(&self, batch: usize, frames: usize) -> AttentionShape {
        AttentionShape {
            batch,
            seq: frames,
            heads: self.config.num_attention_heads,
            head_dim: self.config.head_dim(),
        }
    }

    /// The half kind when attention runs on tensor cores: half precision and head_dim 64 (the tensor-core
    /// kernels' only size; other head sizes use the f32 kernels).
    fn attention_on_tensor_cores(&self, shape: &AttentionShape) -> Option<HalfKind> {
        self.precision.half().filter(|_| shape.head_dim == 64)
    }

    /// Layer `l` on h [B*T, H]: its output and, when `record`, what backward needs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_forward(
        &self,
        l: usize,
        h: &Buf,
        batch: usize,
        frames: usize,
        key_valid: Option<&DeviceBuffer<u8>>,
        attn_dropout: Option<AttentionDropout>,
        seeds: [u64; 3],
        train: bool,
        record: bool,
    ) -> Result<(Buf, Option<LayerSaved>)> {
        let cfg = &self.config;
        let dev = &self.dev;
        let pre = format!("encoder.layers.{l}");
        let (rows, hidden) = (batch * frames, cfg.hidden_size);
        let eps = cfg.layer_norm_eps;
        let post_ln = !cfg.do_stable_layer_norm;
        let attn_in = if post_ln {
            None
        } else {
            Some(self.layer_norm(h, rows, &format!("{pre}.layer_norm"), eps)?)
        };
        let x = attn_in.as_ref().map(|t| &t.0).unwrap_or(h);
        let q = self.linear(x, rows, &format!("{pre}.attention.q_proj"))?;
        let k = self.linear(x, rows, &format!("{pre}.attention.k_proj"))?;
        let v = self.linear(x, rows, &format!("{pre}.attention.v_proj"))?;
        let shape = self.attention_shape(batch, frames);
        let scale = (cfg.head_dim() as f32).powf(-0.5);
        let mut attn = dev.alloc(rows * hidden)?;
        let mut lse = dev.alloc(batch * shape.heads * frames)?;
        match self.attention_on_tensor_cores(&shape) {
            None => attention::attention_forward(
                dev,
                &mut attn,
                &mut lse,
                &q,
                &k,
                &v,
                key_valid,
                &shape,
                scale,
                attn_dropout,
            ),
            Some(kind) => {
                let half = |x: &Buf| tensor_core::to_half(dev, kind, x);
                attention_tc::attention_tc_forward(
                    dev,
                    kind,
                    &mut attn,
                    &mut lse,
                    &half(&q)?,
                    &half(&k)?,
                    &half(&v)?,
                    key_valid,
                    &shape,
                    scale,
                    attn_dropout,
                )
            }
        }
        .with_context(|| format!("{pre}.attention"))?;
        let o = self.linear(&attn, rows, &format!("{pre}.attention.out_proj"))?;
        let o = self.dropout(o, cfg.hidden_dropout, seeds[0], train)?;
        let mut resid1 = dev.alloc(rows * hidden)?;
        elementwise::add(dev, &mut resid1, h, &o)?;
        drop(o);
        let ffn_norm = if post_ln {
            "layer_norm"
        } else {
            "final_layer_norm"
        };
        let (ffn_in, mean, rstd) =
            self.layer_norm(&resid1, rows, &format!("{pre}.{ffn_norm}"), eps)?;
        let inter = self.linear(
            &ffn_in,
            rows,
            &format!("{pre}.feed_forward.intermediate_dense"),
        )?;
        let mut act = dev.alloc(inter.len())?;
        activation::activation_forward(dev, cfg.hidden_activation()?, &mut act, &inter)?;
        let act = self.dropout(act, cfg.activation_dropout, seeds[1], train)?;
        let f = self.linear(&act, rows, &format!("{pre}.feed_forward.output_dense"))?;
        let f = self.dropout(f, cfg.hidden_dropout, seeds[2], train)?;
        let mut sum = dev.alloc(rows * hidden)?;
        // Post-LN: the FFN residual is the normed ffn_in; pre-LN: the un-normed resid1.
        elementwise::add(dev, &mut sum, if post_ln { &ffn_in } else { &resid1 }, &f)?;
        drop(f);
        let (out, resid2) = if post_ln {
            let (out, m, r) =
                self.layer_norm(&sum, rows, &format!("{pre}.final_layer_norm"), eps)?;
            (out, Some((sum, m, r)))
        } else {
            (sum, None)
        };
        let saved = record.then_some(LayerSaved {
            attn_in,
            q,
            k,
            v,
            attn,
            lse,
            attn_dropout,
            resid1,
            ffn_in,
            ffn_in_stats: (mean, rstd),
            inter,
            act,
            resid2,
            seeds,
        });
        Ok((out, saved))
    }

    /// Backward of layer `l`: d(layer output) -> d(layer input h); parameter gradients accumulated.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_backward(
        &mut self,
        l: usize,
        s: LayerSaved,
        h: &Buf,
        d_out: Buf,
        batch: usize,
        frames: usize,
        key_valid: Option<&DeviceBuffer<u8>>,
        train: bool,
    ) -> Result<Buf> {
        let cfg = self.config.clone();
        let pre = format!("encoder.layers.{l}");
        let (rows, hidden, inter_f) = (batch * frames, cfg.hidden_size, cfg.intermediate_size);
        let post_ln = !cfg.do_stable_layer_norm;
        let ffn_norm = if post_ln {
            "layer_norm"
        } else {
            "final_layer_norm"
        };

        // d(resid1) collects both the FFN branch and the residual path; post-LN starts below its norm.
        let (mut d_ffn_in, d_ffn_out, mut d_resid1) = if let Some((sum, m, r)) = &s.resid2 {
            let mut d_sum = self.zeros(rows * hidden)?;
            self.layer_norm_backward(
                &format!("{pre}.final_layer_norm"),
                &mut d_sum,
                &d_out,
                sum,
                m,
                r,
            )?;
            (self.copy(&d_sum)?, d_sum, None)
        } else {
            (self.zeros(rows * hidden)?, self.copy(&d_out)?, Some(d_out))
        };
        let d_f = self.dropout_backward(d_ffn_out, cfg.hidden_dropout, s.seeds[2], train)?;
        let mut d_act = self.zeros(rows * inter_f)?;
        self.linear_backward(
            &format!("{pre}.feed_forward.output_dense"),
            Some(&mut d_act),
            &d_f,
            &s.act,
            rows,
        )?;
        drop((d_f, s.act));
        let d_act = self.dropout_backward(d_act, cfg.activation_dropout, s.seeds[1], train)?;
        let mut d_inter = self.zeros(rows * inter_f)?;
        activation::activation_backward(
            &self.dev,
            self.config.hidden_activation()?,
            &mut d_inter,
            &d_act,
            &s.inter,
        )?;
        drop((d_act, s.inter));
        self.linear_backward(
            &format!("{pre}.feed_forward.intermediate_dense"),
            Some(&mut d_ffn_in),
            &d_inter,
            &s.ffn_in,
            rows,
        )?;
        drop((d_inter, s.ffn_in));
        let (m, r) = &s.ffn_in_stats;
        let d_resid1 = match d_resid1.as_mut() {
            // Pre-LN: d(resid1) = d_out + LN2 backward of d(ffn_in).
            Some(d) => {
                self.layer_norm_backward(
                    &format!("{pre}.{ffn_norm}"),
                    d,
                    &d_ffn_in,
                    &s.resid1,
                    m,
                    r,
                )?;
                d_resid1.take().expect("pre-LN residual gradient")
            }
            None => {
                let mut d = self.zeros(rows * hidden)?;
                self.layer_norm_backward(
                    &format!("{pre}.{ffn_norm}"),
                    &mut d,
                    &d_ffn_in,
                    &s.resid1,
                    m,
                    r,
                )?;
                d
            }
        };
        drop((d_ffn_in, s.resid1));

        // Attention block: resid1 = h + dropout(out_proj(attention(q, k, v))).
        let mut d_h = self.copy(&d_resid1)?;
        let d_o = self.dropout_backward(d_resid1, cfg.hidden_dropout, s.seeds[0], train)?;
        let mut d_attn = self.zeros(rows * hidden)?;
        self.linear_backward(
            &format!("{pre}.attention.out_proj"),
            Some(&mut d_attn),
            &d_o,
            &s.attn,
            rows,
        )?;
        drop(d_o);
        let shape = self.attention_shape(batch, frames);
        let scale = (cfg.head_dim() as f32).powf(-0.5);
        let (mut dq, mut dk, mut dv) = (
            self.zeros(rows * hidden)?,
            self.zeros(rows * hidden)?,
            self.zeros(rows * hidden)?,
        );
        let mut delta = self.dev.alloc(s.lse.len())?;
        match self.attention_on_tensor_cores(&shape) {
            None => attention::attention_backward(
                &self.dev,
                &mut dq,
                &mut dk,
                &mut dv,
                &mut delta,
                &d_attn,
                &s.q,
                &s.k,
                &s.v,
                &s.attn,
                &s.lse,
                key_valid,
                &shape,
                scale,
                s.attn_dropout,
            ),
            Some(kind) => {
                let half = |x: &Buf| tensor_core::to_half(&self.dev, kind, x);
                attention_tc::attention_tc_backward(
                    &self.dev,
                    kind,
                    &mut dq,
                    &mut dk,
                    &mut dv,
                    &mut delta,
                    &d_attn,
                    &half(&s.q)?,
                    &half(&s.k)?,
                    &half(&s.v)?,
                    &s.attn,
                    &s.lse,
                    key_valid,
                    &shape,
                    scale,
                    s.attn_dropout,
                )
            }
        }
        .with_context(|| format!("{pre}.attention backward"))?;
        drop((d_attn, delta, s.q, s.k, s.v, s.attn, s.lse));
        let x = s.attn_in.as_ref().map(|t| &t.0).unwrap_or(h);
        let mut d_x_pre = if post_ln {
            None
        } else {
            Some(self.zeros(rows * hidden)?)
        };
        for (name, d) in [("q_proj", &dq), ("k_proj", &dk), ("v_proj", &dv)] {
            let dx = d_x_pre.as_mut().unwrap_or(&mut d_h);
            self.linear_backward(&format!("{pre}.attention.{name}"), Some(dx), d, x, rows)?;
        }
        if let (Some(d_x), Some((_, m, r))) = (&d_x_pre, &s.attn_in) {
            self.layer_norm_backward(&format!("{pre}.layer_norm"), &mut d_h, d_x, h, m, r)?;
        }
        Ok(d_h)
    }

    pub(super) fn zeros(&self, n: usize) -> Result<Buf> {
        self.dev.alloc_zeros(n)
    }

    pub(super) fn copy(&self, x: &Buf) -> Result<Buf> {
        let mut out = self.dev.alloc(x.len())?;
        layout::copy(&self.dev, &mut out, x)?;
        Ok(out)
    }

    /// The gradient through dropout (p, seed): `d` itself when dropout was not applied.
    pub(super) fn dropout_backward(&self, d: Buf, p: f32, seed: u64, train: bool) -> Result<Buf> {
        if !train || p == 0.0 {
            return Ok(d);
        }
        let mut dx = self.zeros(d.len())?;
        dropout::dropout_backward(&self.dev, &mut dx, &d, d.len(), p, seed)?;
        Ok(dx)
    }

    /// Linear `name` backward: dx += dout·W; dW, db accumulated when trainable.
    pub fn linear_backward(
        &mut self,
        name: &str,
        dx: Option<&mut Buf>,
        dout: &Buf,
        x: &Buf,
        rows: usize,
    ) -> Result<()> {
        let (w, b, in_f, out_f) = self.params.linear_ids(name)?;
        let dev = self.dev.clone();
        let precision = self.precision;
        let (weight, dw, db) = self.params.value_and_grads(w, b);
        if dx.is_none() && dw.is_none() && db.is_none() {
            return Ok(());
        }
        match precision.half() {
            None => gemm::linear_backward(&dev, dx, dw, db, dout, x, weight, rows, in_f, out_f),
            Some(kind) => tensor_core::linear_backward_tc(
                &dev, kind, dx, dw, db, dout, x, weight, rows, in_f, out_f,
            ),
        }
        .with_context(|| format!("{name} backward"))
    }

    /// LayerNorm `name` backward over the last dim: dx += ..., dweight/dbias accumulated when trainable.
    pub(super) fn layer_norm_backward(
        &mut self,
        name: &str,
        dx: &mut Buf,
        dout: &Buf,
        x: &Buf,
        mean: &Buf,
        rstd: &Buf,
    ) -> Result<()> {
        let w = self.params.id(&format!("{name}.weight"))?;
        let b = self.params.id(&format!("{name}.bias"))?;
        let rows = mean.len();
        let cols = x.len() / rows.max(1);
        let dev = self.dev.clone();
        let (weight, dw, db) = self.params.value_and_grads(w, Some(b));
        layer_norm::layer_norm_backward(
            &dev,
            Some(dx),
            dw,
            db,
            dout,
            x,
            weight,
            mean,
            rstd,
            rows,
            cols,
        )
        .with_context(|| format!("{name} backward"))
    }
}
