//! One training step on a CUDA device (GPU or emulator): the MERT loss (NCE codebook loss, CQT MSE,
//! feature penalty) and its backward, global-norm clipping, the fused AdamW step and gradient zeroing
//! all run as kernels; the host only prepares the batch and reads back scalars. The model's values and
//! the optimiser moments move to the host only for checkpoints ([`CudaTrainer::download`]).

use anyhow::{ensure, Context, Result};

use crate::autograd::ParamStore;
use crate::cuda::adamw::{adamw_step, AdamwScalars, AdamwTensor};
use crate::cuda::cqt::CqtDevicePlan;
use crate::cuda::{layout, nce_loss, reduce};
use crate::device::{CudaDevice, DeviceBuffer};
use crate::model::cuda_mert::{CudaMert, Precision};
use crate::model::mert::{ForwardOptions, Mert};
use crate::ops::nce_loss::NceShape;
use crate::train::objective::{
    masked_targets, HeadsConfig, LossWeights, MaskedTargets, PretrainBatch,
};
use crate::train::optim::{AdamState, AdamW, GradNorm};

type Buf = DeviceBuffer<f32>;

/// Loss values of one micro-batch as host scalars (what the trainer logs, from either backend).
#[derive(Clone, Copy, Debug)]
pub struct StepLoss {
    pub total: f32,
    pub codebook_ce: f32,
    pub feature_penalty: f32,
    pub cqt_mse: f32,
    pub masked_frames: usize,
    pub accuracy: f32,
}

/// Dynamic loss scaling for f16 (torch.cuda.amp.GradScaler's policy): the loss seed is multiplied by
/// `scale`; a step whose scaled gradients overflow is skipped and the scale halved; after
/// `growth_interval` good steps in a row it doubles.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    pub scale: f32,
    pub growth_interval: usize,
    good_steps: usize,
}

impl LossScaler {
    pub fn new(init_scale: f32, growth_interval: usize) -> LossScaler {
        LossScaler {
            scale: init_scale,
            growth_interval,
            good_steps: 0,
        }
    }

    fn update(&mut self, overflow: bool) {
        if overflow {
            self.scale *= 0.5;
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        }
    }
}

/// Model, gradients and AdamW moments resident on the device.
pub struct CudaTrainer {
    pub model: CudaMert,
    /// (exp_avg, exp_avg_sq, updates so far) per parameter, created at its first update.
    moments: Vec<Option<(Buf, Buf, u64)>>,
    /// Present for f16 training.
    pub scaler: Option<LossScaler>,
    /// The last `clip_grad_norm` found overflowing scaled gradients (an expected f16 event, not a failure).
    pub last_overflow: bool,
    /// The MERT CQT plan on the device, uploaded at the first batch that leaves its CQT to the device.
    cqt_plan: Option<CqtDevicePlan>,
}

impl CudaTrainer {
    /// `precision` of the linear layers; f16 gets a loss scaler (initial scale 2^16, growth every 2000
    /// good steps, as torch's GradScaler).
    pub fn new(dev: &CudaDevice, model: &Mert, precision: Precision) -> Result<CudaTrainer> {
        let mut model = CudaMert::new(dev, model)?;
        model.precision = precision;
        let moments = (0..model.params.names.len()).map(|_| None).collect();
        let scaler = (precision == Precision::F16).then(|| LossScaler::new(65536.0, 2000));
        Ok(CudaTrainer {
            model,
            moments,
            scaler,
            last_overflow: false,
            cqt_plan: None,
        })
    }

    fn dev(&self) -> CudaDevice {
        self.model.dev.clone()
    }

    /// Follows the frozen flags of `store` (a stage change): frozen parameters lose their gradient
    /// buffer, newly trainable ones get a zeroed one.
    pub fn apply_frozen(&mut self, store: &ParamStore) -> Result<()> {
        let dev = self.dev();
        let p = &mut self.model.params;
        for i in 0..p.names.len() {
            let frozen = store
                .by_name(&p.names[i])
                .with_context(|| format!("parameter {} missing on the host", p.names[i]))?
                .frozen;
            match (frozen, p.grads[i].is_some()) {
                (true, true) => p.grads[i] = None,
                (false, false) => p.grads[i] = Some(dev.alloc_zeros(p.values[i].len())?),
                _ => {}
            }
        }
        Ok(())
    }

    /// The CQT target rows [rows.len(), bins] of the masked frames `rows` (flat indices into
    /// [b, frames]), from the CQT of the clean audio [b, len] computed on the device.
    fn device_cqt_target(
        &mut self,
        clean: &[f32],
        b: usize,
        len: usize,
        frames: usize,
        rows: &[usize],
        heads: &HeadsConfig,
    ) -> Result<Buf> {
        let dev = self.dev();
        if self.cqt_plan.is_none() {
            let plan = CqtDevicePlan::new(&dev, crate::audio::cqt::CqtPlan::mert_shared())?;
            self.cqt_plan = Some(plan);
        }
        let plan = self.cqt_plan.as_ref().expect("uploaded above");
        ensure!(
            plan.n_bins() == heads.cqt_bins,
            "the CQT has {} bins, the heads predict {}",
            plan.n_bins(),
            heads.cqt_bins
        );
        let cqt_frames = plan.n_frames(len);
        ensure!(
            cqt_frames >= frames,
            "CQT of {len} samples has {cqt_frames} frames for {frames} model frames"
        );
        let cqt = plan
            .forward(&dev, &dev.htod(clean)?, b, len)
            .context("CQT target on the device")?;
        let index: Vec<i32> = rows
            .iter()
            .map(|&r| ((r / frames) * cqt_frames + r % frames) as i32)
            .collect();
        let mut out = dev.alloc(rows.len() * heads.cqt_bins)?;
        let index = dev.htod(&index)?;
        layout::gather_rows(&dev, &mut out, &cqt, &index, b * cqt_frames, heads.cqt_bins)?;
        Ok(out)
    }

    pub fn zero_grads(&mut self) -> Result<()> {
        let dev = self.dev();
        self.model.params.zero_grads(&dev)
    }

    /// Forward, loss and backward of one micro-batch; gradients of `scale * total` accumulate.
    pub fn loss_backward(
        &mut self,
        heads: &HeadsConfig,
        batch: &PretrainBatch,
        weights: &LossWeights,
        opts: &ForwardOptions,
        scale: f32,
    ) -> Result<StepLoss> {
        let dev = self.dev();
        let scale = scale * self.scaler.as_ref().map_or(1.0, |s| s.scale);
        let MaskedTargets {
            rows,
            targets,
            cqt_target,
        } = masked_targets(&self.model.config, heads, batch)?;
        let (n_m, k_total) = (rows.len(), heads.codebooks);
        let (b, len) = (batch.audio.shape()[0], batch.audio.shape()[1]);
        let mut opts = opts.clone();
        opts.mask_time = Some(batch.mask.clone());
        let fwd = self
            .model
            .forward(batch.audio.data(), b, len, None, &opts, true)?;
        let cqt_target = match &batch.clean_audio {
            None => dev.htod(&cqt_target)?,
            Some(clean) => self.device_cqt_target(clean, b, len, fwd.frames, &rows, heads)?,
        };
        let hidden = self.model.config.hidden_size;
        let frames_total = b * fwd.frames;
        let index: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let index = dev.htod(&index)?;
        let x = fwd.hidden_states.last().expect("hidden states");
        let mut xm = dev.alloc(n_m * hidden)?;
        layout::gather_rows(&dev, &mut xm, x, &index, frames_total, hidden)?;

        let m = &self.model;
        let id = |n: &str| {
            m.params
                .id(n)
                .with_context(|| format!("head {n} missing: initialise or load the heads"))
        };
        let emb = id("label_embs_concat")?;
        let proj = m.linear(&xm, n_m, "final_proj")?;
        let s = NceShape {
            rows: n_m,
            codebooks: k_total,
            codewords: m.params.shapes[emb][0] / k_total,
            dim: heads.final_dim,
        };
        let targets = dev.htod(&targets)?;
        let mut nce = dev.alloc(n_m * k_total)?;
        let mut correct = dev.alloc::<i32>(n_m * k_total)?;
        let mut lse = dev.alloc(n_m * k_total)?;
        nce_loss::nce_loss_forward(
            &dev,
            &mut nce,
            &mut correct,
            &mut lse,
            &proj,
            &m.params.values[emb],
            &targets,
            &s,
            heads.temperature,
        )?;
        let ce_sum: f64 = dev.dtoh(&nce)?.iter().map(|&v| v as f64).sum();
        let n_correct = dev.dtoh(&correct)?.iter().filter(|&&c| c != 0).count();
        let cqt_pred = m.linear(&xm, n_m, "encoder_cqt_model.fc")?;
        let mse =
            layout::squared_error_sum(&dev, &cqt_pred, Some(&cqt_target))? / cqt_pred.len() as f64;
        let n_feat = fwd.features.len();
        let pen = layout::squared_error_sum(&dev, &fwd.features, None)? / n_feat as f64;
        let n = n_m as f32;
        // Rounded like the tape's f32 values and its weighted sum, so CPU and device agree.
        let (ce, pen32, mse32) = (ce_sum as f32, pen as f32, mse as f32);
        let total =
            ce * (weights.codebook / n) + pen32 * weights.feature_penalty + mse32 * weights.cqt;

        // Backward: heads, then the model from d(last hidden state) and d(features).
        let mut d_proj = dev.alloc_zeros(proj.len())?;
        {
            let (emb_value, d_emb, _) = self.model.params.value_and_grads(emb, None);
            nce_loss::nce_loss_backward(
                &dev,
                Some(&mut d_proj),
                d_emb,
                scale * weights.codebook / n,
                &proj,
                emb_value,
                &targets,
                &lse,
                &s,
                heads.temperature,
            )?;
        }
        let mut d_xm = dev.alloc_zeros(xm.len())?;
        self.model
            .linear_backward("final_proj", Some(&mut d_xm), &d_proj, &xm, n_m)?;
        let mut d_cqt = dev.alloc_zeros(cqt_pred.len())?;
        let mse_scale = scale * weights.cqt * 2.0 / cqt_pred.len() as f32;
        layout::squared_error_backward(&dev, &mut d_cqt, &cqt_pred, Some(&cqt_target), mse_scale)?;
        self.model
            .linear_backward("encoder_cqt_model.fc", Some(&mut d_xm), &d_cqt, &xm, n_m)?;
        let mut d_last = dev.alloc_zeros(frames_total * hidden)?;
        layout::gather_rows_backward(&dev, &mut d_last, &d_xm, &index, frames_total, hidden)?;
        let mut d_feat = dev.alloc_zeros(n_feat)?;
        let pen_scale = scale * weights.feature_penalty * 2.0 / n_feat as f32;
        layout::squared_error_backward(&dev, &mut d_feat, &fwd.features, None, pen_scale)?;
        let mut d_hidden: Vec<Option<Buf>> = (0..fwd.hidden_states.len()).map(|_| None).collect();
        *d_hidden.last_mut().expect("hidden states") = Some(d_last);
        self.model.backward(fwd, d_hidden, Some(d_feat))?;
        Ok(StepLoss {
            total,
            codebook_ce: ce / n,
            feature_penalty: pen32,
            cqt_mse: mse32,
            masked_frames: n_m,
            accuracy: n_correct as f32 / (n_m * k_total) as f32,
        })
    }

    /// torch clip_grad_norm_ over the trainable gradients (norm by the deterministic device reduction).
    /// With a loss scaler the gradients are unscaled first (in the same pass as the clip); overflowing
    /// scaled gradients give a non-finite norm, set `last_overflow` and halve the scale.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<GradNorm> {
        let dev = self.dev();
        self.last_overflow = false;
        let loss_scale = self.scaler.as_ref().map_or(1.0, |s| s.scale);
        let grads: Vec<&Buf> = self.model.params.grads.iter().flatten().collect();
        if grads.is_empty() {
            return Ok(GradNorm {
                norm: 0.0,
                scale: 1.0,
            });
        }
        let scaled_norm = reduce::global_norm(&dev, &grads)? as f64;
        if let Some(s) = self.scaler.as_mut() {
            self.last_overflow = !scaled_norm.is_finite();
            s.update(self.last_overflow);
        }
        let norm = scaled_norm / loss_scale as f64;
        if !norm.is_finite() {
            return Ok(GradNorm { norm, scale: 1.0 });
        }
        let clip = ((max_norm as f32) / (norm as f32 + 1e-6)).min(1.0);
        let factor = clip / loss_scale;
        if factor != 1.0 {
            for g in self.model.params.grads.iter_mut().flatten() {
                let mut scaled = dev.alloc(g.len())?;
                crate::cuda::elementwise::scale(&dev, &mut scaled, g, factor)?;
                *g = scaled;
            }
        }
        Ok(GradNorm { norm, scale: clip })
    }

    /// One fused AdamW update of every trainable parameter, with `optimizer`'s groups and scheduled
    /// `lr`. The caller checks the gradient norm is finite first (a non-finite step is skipped).
    pub fn adamw_step(&mut self, optimizer: &AdamW, lr: f64) -> Result<usize> {
        let dev = self.dev();
        let p = &mut self.model.params;
        for i in 0..p.names.len() {
            if p.grads[i].is_some() && self.moments[i].is_none() {
                let n = p.values[i].len();
                self.moments[i] = Some((dev.alloc_zeros(n)?, dev.alloc_zeros(n)?, 0));
            }
        }
        let mut tensors = Vec::new();
        for (((value, grad), moments), name) in p
            .values
            .iter_mut()
            .zip(&p.grads)
            .zip(self.moments.iter_mut())
            .zip(&p.names)
        {
            let (Some(grad), Some((m, v, step))) = (grad, moments.as_mut()) else {
                continue;
            };
            let gi = optimizer
                .group_of(name)
                .with_context(|| format!("parameter {name} is in no optimiser group"))?;
            let g = &optimizer.groups[gi];
            *step += 1;
            tensors.push(AdamwTensor {
                param: value,
                grad,
                exp_avg: m,
                exp_avg_sq: v,
                scalars: AdamwScalars::new(lr * g.lr_scale, g.betas, g.eps, g.weight_decay, *step),
            });
        }
        let n = tensors.len();
        adamw_step(&dev, &mut tensors)?;
        Ok(n)
    }

    /// Forgets the moments (a new stage starts with a fresh optimiser).
    pub fn reset_optimizer(&mut self) {
        self.moments.iter_mut().for_each(|m| *m = None);
    }

    /// Copies values into `model` and moments into `optimizer` (for a checkpoint).
    pub fn download(&self, model: &mut Mert, optimizer: &mut AdamW) -> Result<()> {
        let dev = self.dev();
        let p = &self.model.params;
        p.download_values(&dev, &mut model.params)?;
        optimizer.reset_state();
        for (i, m) in self.moments.iter().enumerate() {
            if let Some((m, v, step)) = m {
                optimizer.set_state(
                    &p.names[i],
                    AdamState {
                        exp_avg: dev.dtoh(m)?,
                        exp_avg_sq: dev.dtoh(v)?,
                        step: *step,
                    },
                );
            }
        }
        Ok(())
    }

    /// Uploads `optimizer`'s moments (after a resume).
    pub fn upload_optimizer(&mut self, optimizer: &AdamW) -> Result<()> {
        let dev = self.dev();
        let p = &self.model.params;
        for (i, name) in p.names.iter().enumerate() {
            self.moments[i] = match optimizer.state(name) {
                None => None,
                Some(st) => {
                    ensure!(
                        st.exp_avg.len() == p.values[i].len(),
                        "optimiser state of {name} has {} values for {}",
                        st.exp_avg.len(),
                        p.values[i].len()
                    );
                    Some((dev.htod(&st.exp_avg)?, dev.htod(&st.exp_avg_sq)?, st.step))
                }
            };
        }
        Ok(())
    }
}
