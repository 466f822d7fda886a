//! The training loop: stages with freezing and LR re-warming, gradient accumulation, clipping, skipped
//! non-finite steps, metrics.jsonl, checkpoints and exact resume.

use crate::autograd::Tape;
use crate::device::Device;
use crate::model::cuda_mert::Precision;
use crate::model::mert::{ForwardOptions, Mert};
use crate::tensor::Tensor;
use crate::train::checkpoint::{latest_checkpoint, read_state, save_checkpoint, TrainState};
use crate::train::config::TrainConfig;
use crate::train::cuda_step::{CudaTrainer, StepLoss};
use crate::train::data::{draw_seed, DataPipeline};
use crate::train::masking::{compute_mask_indices, MaskRng};
use crate::train::mixup::{inbatch_noise_mixup, MixupConfig};
use crate::train::objective::{load_heads, mert_loss, HeadsConfig, LossWeights, PretrainBatch};
use crate::train::optim::{clip_grad_norm, AdamW, ParamGroup, StepOutcome};
use crate::train::schedule::{CosineStage, PolynomialDecay, StagedCosine};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Consecutive non-finite steps after which the run stops.
pub const MAX_CONSECUTIVE_SKIPS: usize = 5;

pub struct RunOptions {
    pub run_dir: PathBuf,
    pub resume: bool,
    pub checkpoint_every: usize,
    /// Stop (as if interrupted) after this many optimizer steps of this invocation.
    pub stop_after: Option<usize>,
    pub progress: bool,
    /// Where the steps run: the CPU tape, or every kernel on a CUDA device (GPU or emulator).
    pub device: Device,
    /// Linear-layer arithmetic on the CUDA device (f32 on the CPU).
    pub precision: Precision,
}

/// One line of metrics.jsonl.
#[derive(Serialize, Clone, Debug)]
pub struct StepMetrics {
    pub step: usize,
    pub stage: String,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub codebook_ce: f64,
    pub feature_penalty: f64,
    pub cqt_mse: f64,
    pub accuracy: f64,
    pub masked_frames: usize,
    pub audio_seconds_per_second: f64,
    pub skipped: bool,
}

enum Schedule {
    Cosine(StagedCosine),
    Polynomial(PolynomialDecay),
}

impl Schedule {
    fn new(cfg: &TrainConfig) -> Result<Self> {
        Ok(if cfg.schedule == "polynomial" {
            let s = &cfg.stages[0];
            if cfg.stages.len() != 1 {
                bail!("the polynomial schedule takes exactly one stage");
            }
            Schedule::Polynomial(PolynomialDecay {
                peak_lr: s.lr_max as f64,
                end_lr: s.lr_min as f64,
                warmup: s.warmup(),
                total: s.steps,
                power: 1.0,
            })
        } else {
            Schedule::Cosine(StagedCosine::new(
                cfg.stages
                    .iter()
                    .map(|s| CosineStage {
                        steps: s.steps,
                        warmup: s.warmup(),
                        eta_max: s.lr_max as f64,
                        eta_min: s.lr_min as f64,
                    })
                    .collect(),
            )?)
        })
    }
    fn lr(&self, step: usize) -> f64 {
        match self {
            Schedule::Cosine(s) => s.lr(step),
            Schedule::Polynomial(p) => p.lr(step),
        }
    }
}

/// (stage index, first global step of that stage) for global `step`.
fn locate(cfg: &TrainConfig, step: usize) -> (usize, usize) {
    let mut start = 0;
    for (i, s) in cfg.stages.iter().enumerate() {
        if step < start + s.steps {
            return (i, start);
        }
        start += s.steps;
    }
    (
        cfg.stages.len() - 1,
        start - cfg.stages.last().unwrap().steps,
    )
}

fn optimizer_for(cfg: &TrainConfig, stage: usize) -> Result<AdamW> {
    let s = &cfg.stages[stage];
    AdamW::new(vec![ParamGroup::all(
        (s.betas[0] as f64, s.betas[1] as f64),
        s.eps as f64,
        s.weight_decay as f64,
    )])
}

fn apply_freezing(model: &mut Mert, cfg: &TrainConfig, stage: usize) -> usize {
    model.params.set_frozen(&["*"], true);
    let pats: Vec<&str> = cfg.stages[stage]
        .trainable
        .iter()
        .map(String::as_str)
        .collect();
    model.params.set_frozen(&pats, false)
}

/// Run (or resume) training. `model` must already hold its heads. Returns the metrics of this invocation.
pub fn train(
    cfg: &TrainConfig,
    model: &mut Mert,
    heads: &HeadsConfig,
    data: &DataPipeline,
    opts: &RunOptions,
) -> Result<Vec<StepMetrics>> {
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("creating {}", opts.run_dir.display()))?;
    let metrics_path = opts.run_dir.join("metrics.jsonl");
    let schedule = Schedule::new(cfg)?;
    let total = cfg.total_steps();
    let mut start_step = 0;
    let mut skips = 0;
    let mut optimizer = optimizer_for(cfg, 0)?;
    if opts.resume {
        if let Some(ckpt) = latest_checkpoint(&opts.run_dir)? {
            let state = read_state(&ckpt)?;
            let loaded = Mert::load(&ckpt.join("model"))?;
            for p in loaded.params.iter() {
                let id = model
                    .params
                    .id(&p.name)
                    .with_context(|| format!("checkpoint has unknown parameter {}", p.name))?;
                model.params.get_mut(id).value = p.value.clone();
            }
            load_heads(model, &ckpt.join("heads.safetensors"), heads.codebooks)?;
            let (stage, _) = locate(cfg, state.next_step.min(total.saturating_sub(1)));
            optimizer = optimizer_for(cfg, stage)?;
            optimizer.load_state(&ckpt.join("optimizer.safetensors"), &model.params)?;
            start_step = state.next_step;
            skips = state.consecutive_skips;
            truncate_metrics(&metrics_path, start_step)?;
            eprintln!("resuming from {} at step {start_step}", ckpt.display());
        } else {
            eprintln!(
                "no checkpoint in {}: starting from step 0",
                opts.run_dir.display()
            );
        }
    }
    let mut on_device = match &opts.device {
        Device::Cpu => None,
        Device::Cuda(dev) => {
            let mut t = CudaTrainer::new(dev, model, opts.precision)?;
            t.upload_optimizer(&optimizer)?;
            Some(t)
        }
    };
    if start_step == 0 && metrics_path.exists() {
        std::fs::remove_file(&metrics_path)?;
    }
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)?;
    let weights = LossWeights {
        codebook: cfg.objective.codebook_weight,
        feature_penalty: cfg.objective.feature_penalty_weight,
        cqt: cfg.objective.cqt_weight,
    };
    let o = &cfg.objective;
    let mixup = MixupConfig {
        prob: o.mixup_prob,
        min_samples: o.mixup_min_samples,
        max_samples: o.mixup_max_samples,
        min_count: o.mixup_min_count,
        max_count: o.mixup_max_count,
    };
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {elapsed_precise} eta {eta}  {msg}",
        )
        .unwrap(),
    );
    bar.set_position(start_step as u64);
    let mut out = Vec::new();
    let mut current_stage = usize::MAX;
    for (done_here, step) in (start_step..total).enumerate() {
        if opts.stop_after.is_some_and(|n| done_here >= n) {
            break;
        }
        let (si, stage_start) = locate(cfg, step);
        let stage = &cfg.stages[si];
        if si != current_stage {
            let trainable = apply_freezing(model, cfg, si);
            if trainable == 0 {
                bail!(
                    "stage {}: no parameter matches {:?}",
                    stage.name,
                    stage.trainable
                );
            }
            if step == stage_start {
                optimizer = optimizer_for(cfg, si)?; // a new stage starts with fresh optimiser state
            }
            if let Some(t) = on_device.as_mut() {
                t.apply_frozen(&model.params)?;
                if step == stage_start {
                    t.reset_optimizer(); // resumed mid-stage, the moments were uploaded with the model
                }
            }
            current_stage = si;
        }
        let lr = schedule.lr(step);
        let t0 = Instant::now();
        match on_device.as_mut() {
            Some(t) => t.zero_grads()?,
            None => model.params.zero_grad(),
        }
        let micro = stage.micro_batch();
        let (mut loss, mut ce, mut pen, mut mse, mut acc, mut masked) =
            (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
        let mut audio_seconds = 0.0;
        for m in 0..stage.grad_accumulation {
            let crops = data.batch(stage, step, m, micro)?;
            let frames = model.config.frames_for_samples(crops.len);
            let mut mrng = MaskRng::new(draw_seed(cfg.seed, step, m, 0x3A5C));
            let mask: Vec<u8> = compute_mask_indices(
                crops.batch,
                frames,
                &vec![frames; crops.batch],
                o.mask_prob,
                o.mask_length,
                o.mask_min_spans,
                &mut mrng,
            )
            .into_iter()
            .map(u8::from)
            .collect();
            let mut audio = crops.audio.clone();
            inbatch_noise_mixup(
                &mut audio,
                crops.batch,
                crops.len,
                &mixup,
                &mut MaskRng::new(draw_seed(cfg.seed, step, m, 0x313C)),
            );
            let batch = PretrainBatch {
                audio: Tensor::from_f32(&[crops.batch, crops.len], audio),
                codes: crops.codes,
                code_frames: crops.code_frames,
                codebook_size: o.codebook_size,
                cqt: crops.cqt,
                cqt_frames: crops.cqt_frames,
                mask,
            };
            let fopts = ForwardOptions {
                train: true,
                seed: draw_seed(cfg.seed, step, m, 0xD80F),
                mask_time: None,
                feature_grad_mult: Some(o.feature_grad_mult),
            };
            let scale = 1.0 / stage.grad_accumulation as f32;
            let parts = match on_device.as_mut() {
                Some(t) => t.loss_backward(heads, &batch, &weights, &fopts, scale)?,
                None => {
                    let mut tape = Tape::new();
                    let parts = mert_loss(&mut tape, model, heads, &batch, &weights, &fopts)?;
                    let total = parts.total.data()[0];
                    tape.backward(vec![(&parts.total, vec![scale])], &mut model.params)?;
                    StepLoss {
                        total,
                        codebook_ce: parts.codebook_ce,
                        feature_penalty: parts.feature_penalty,
                        cqt_mse: parts.cqt_mse,
                        masked_frames: parts.masked_frames,
                        accuracy: parts.accuracy,
                    }
                }
            };
            let k = stage.grad_accumulation as f64;
            loss += parts.total as f64 / k;
            ce += parts.codebook_ce as f64 / k;
            pen += parts.feature_penalty as f64 / k;
            mse += parts.cqt_mse as f64 / k;
            acc += parts.accuracy as f64 / k;
            masked += parts.masked_frames;
            audio_seconds += (crops.batch * crops.len) as f64 / model.config.sample_rate as f64;
        }
        let norm = match on_device.as_mut() {
            Some(t) => t.clip_grad_norm(stage.clip_norm as f64)?,
            None => clip_grad_norm(&mut model.params, stage.clip_norm as f64),
        };
        let skipped = if !loss.is_finite() || !norm.is_finite() {
            true
        } else if let Some(t) = on_device.as_mut() {
            // A finite global norm means every gradient is finite.
            t.adamw_step(&optimizer, lr)?;
            false
        } else {
            matches!(
                optimizer.step(&mut model.params, lr)?,
                StepOutcome::SkippedNonFinite { .. }
            )
        };
        let overflow = on_device.as_ref().is_some_and(|t| t.last_overflow) && loss.is_finite();
        if skipped && overflow {
            let scale = on_device
                .as_ref()
                .and_then(|t| t.scaler.as_ref())
                .map_or(1.0, |s| s.scale);
            eprintln!(
                "step {step}: f16 gradients overflowed; step skipped, loss scale now {scale}"
            );
        } else if skipped {
            skips += 1;
            eprintln!(
                "step {step}: non-finite loss ({loss}) or gradient (norm {}); step skipped",
                norm.norm
            );
            if skips >= MAX_CONSECUTIVE_SKIPS {
                bail!("{skips} consecutive steps had a non-finite loss or gradient (last at step {step}); stopping. Lower the learning rate or check the data.");
            }
        } else {
            skips = 0;
        }
        let m = StepMetrics {
            step,
            stage: stage.name.clone(),
            loss,
            lr,
            grad_norm: norm.norm,
            codebook_ce: ce,
            feature_penalty: pen,
            cqt_mse: mse,
            accuracy: acc,
            masked_frames: masked,
            audio_seconds_per_second: audio_seconds / t0.elapsed().as_secs_f64(),
            skipped,
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.flush()?;
        bar.set_message(format!("{} loss {:.4} lr {:.2e}", stage.name, loss, lr));
        bar.inc(1);
        out.push(m);
        let next = step + 1;
        let stage_end = next == stage_start + stage.steps;
        if opts.checkpoint_every > 0
            && (next % opts.checkpoint_every == 0 || stage_end || next == total)
        {
            let state = TrainState {
                next_step: next,
                consecutive_skips: skips,
                seed: cfg.seed,
                config_toml: toml::to_string(cfg)?,
            };
            if let Some(t) = &on_device {
                t.download(model, &mut optimizer)?;
            }
            save_checkpoint(&opts.run_dir, model, &optimizer, &state, 2)?;
        }
    }
    bar.finish_and_clear();
    if let Some(t) = &on_device {
        t.download(model, &mut optimizer)?;
    }
    Ok(out)
}

/// Keep only the metrics of steps before `next_step` (a resumed run rewrites the rest).
fn truncate_metrics(path: &std::path::Path, next_step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) < next_step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::model::weights::write_atomically(path, body.as_bytes())
}
