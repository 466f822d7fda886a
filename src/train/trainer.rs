//! The training loop: stages with freezing and LR re-warming, gradient accumulation, clipping, skipped
//! non-finite steps, metrics.jsonl, checkpoints and exact resume.

use crate::autograd::Tape;
use crate::device::Device;
use crate::model::cuda_mert::Precision;
use crate::model::mert::{ForwardOptions, Mert};
use crate::train::checkpoint::{latest_checkpoint, read_state, save_checkpoint, TrainState};
use crate::train::config::TrainConfig;
use crate::train::cuda_step::{CudaTrainer, StepLoss};
use crate::train::data::{draw_seed, DataPipeline};
use crate::train::objective::{load_heads, mert_loss, HeadsConfig, LossWeights};
use crate::train::optim::{clip_grad_norm, AdamW, ParamGroup, StepOutcome};
use crate::train::pipeline::{batch_order, BatchRecipe, Prefetcher};
use crate::train::schedule::{CosineStage, PolynomialDecay, StagedCosine};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// Background threads preparing batches ahead of the step (0: inline, on the loop's thread).
    pub data_workers: usize,
    /// Batches the workers may prepare ahead of the step (>= 1).
    pub queue_depth: usize,
    /// On a CUDA device, compute the CQT targets there (else on the host, in the workers).
    pub device_cqt: bool,
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
    /// Time the step waited for its batches, in ms (inline preparation included).
    pub data_wait_ms: f64,
    /// Audio seconds per second the host pipeline sustains: the step's audio over the worker time that
    /// prepared it, times the number of workers.
    pub data_audio_seconds_per_second: f64,
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
    let (start_step, mut skips, mut optimizer) = restore(cfg, model, heads, opts, &metrics_path)?;
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
    let bar = progress_bar(opts.progress, total, start_step);
    let end = opts
        .stop_after
        .map_or(total, |n| total.min(start_step.saturating_add(n)));
    let recipe = BatchRecipe {
        cfg,
        data,
        model: model.config.clone(),
        device_cqt: opts.device_cqt && on_device.is_some(),
    };
    let mut out = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let order = batch_order(cfg, start_step, end);
        let depth = opts.queue_depth.max(1);
        let mut batches = Prefetcher::start(scope, &recipe, order, opts.data_workers, depth);
        let mut current_stage = usize::MAX;
        for step in start_step..end {
            let (si, stage_start) = cfg.locate(step);
            let stage = &cfg.stages[si];
            if si != current_stage {
                enter_stage(cfg, model, on_device.as_mut(), &mut optimizer, si, step)?;
                current_stage = si;
            }
            let lr = schedule.lr(step);
            let t0 = Instant::now();
            match on_device.as_mut() {
                Some(t) => t.zero_grads()?,
                None => model.params.zero_grad(),
            }
            let sums = accumulate_gradients(
                cfg,
                model,
                &mut on_device,
                heads,
                &mut batches,
                step,
                opts.data_workers,
            )?;
            let loss = sums.loss;
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
            count_skips(
                &mut skips,
                skipped,
                overflow,
                on_device.as_ref(),
                step,
                loss,
                norm.norm,
            )?;
            let m = StepMetrics {
                step,
                stage: stage.name.clone(),
                loss,
                lr,
                grad_norm: norm.norm,
                codebook_ce: sums.ce,
                feature_penalty: sums.pen,
                cqt_mse: sums.mse,
                accuracy: sums.acc,
                masked_frames: sums.masked,
                audio_seconds_per_second: sums.audio_seconds / t0.elapsed().as_secs_f64(),
                data_wait_ms: sums.data_wait.as_secs_f64() * 1e3,
                data_audio_seconds_per_second: sums.audio_seconds
                    / sums.data_busy.as_secs_f64().max(1e-9)
                    * opts.data_workers.max(1) as f64,
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
                checkpoint(opts, model, on_device.as_ref(), &mut optimizer, &state)?;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if let Some(t) = &on_device {
        t.download(model, &mut optimizer)?;
    }
    Ok(out)
}

/// Writes a checkpoint of the model and optimiser (from the device, when training there).
fn checkpoint(
    opts: &RunOptions,
    model: &mut Mert,
    on_device: Option<&CudaTrainer>,
    optimizer: &mut AdamW,
    state: &TrainState,
) -> Result<()> {
    if let Some(t) = on_device {
        t.download(model, optimizer)?;
    }
    save_checkpoint(&opts.run_dir, model, optimizer, state, 2)?;
    Ok(())
}

/// Freezing of stage `si`, entered at `step`: at the stage's first step with fresh optimiser state
/// (resumed mid-stage, the state loaded from the checkpoint stays).
fn enter_stage(
    cfg: &TrainConfig,
    model: &mut Mert,
    on_device: Option<&mut CudaTrainer>,
    optimizer: &mut AdamW,
    si: usize,
    step: usize,
) -> Result<()> {
    let stage = &cfg.stages[si];
    let trainable = apply_freezing(model, cfg, si);
    if trainable == 0 {
        bail!(
            "stage {}: no parameter matches {:?}",
            stage.name,
            stage.trainable
        );
    }
    let first = step == cfg.locate(step).1;
    if first {
        *optimizer = optimizer_for(cfg, si)?;
    }
    if let Some(t) = on_device {
        t.apply_frozen(&model.params)?;
        if first {
            t.reset_optimizer();
        }
    }
    Ok(())
}

/// On `--resume` with a checkpoint: loads the model, heads and optimiser state and trims the metrics
/// to the steps done. Returns (first step to run, consecutive skips so far, optimiser).
fn restore(
    cfg: &TrainConfig,
    model: &mut Mert,
    heads: &HeadsConfig,
    opts: &RunOptions,
    metrics_path: &Path,
) -> Result<(usize, usize, AdamW)> {
    let fresh = optimizer_for(cfg, 0)?;
    if !opts.resume {
        return Ok((0, 0, fresh));
    }
    let Some(ckpt) = latest_checkpoint(&opts.run_dir)? else {
        eprintln!(
            "no checkpoint in {}: starting from step 0",
            opts.run_dir.display()
        );
        return Ok((0, 0, fresh));
    };
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
    let (stage, _) = cfg.locate(state.next_step.min(cfg.total_steps().saturating_sub(1)));
    let mut optimizer = optimizer_for(cfg, stage)?;
    optimizer.load_state(&ckpt.join("optimizer.safetensors"), &model.params)?;
    truncate_metrics(metrics_path, state.next_step)?;
    eprintln!(
        "resuming from {} at step {}",
        ckpt.display(),
        state.next_step
    );
    Ok((state.next_step, state.consecutive_skips, optimizer))
}

fn progress_bar(visible: bool, total: usize, start: usize) -> indicatif::ProgressBar {
    let bar = if visible {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps {elapsed_precise} eta {eta}  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(start as u64);
    bar
}

/// Loss parts of one optimizer step (means over its micro-batches) and the input pipeline's timing.
struct StepSums {
    loss: f64,
    ce: f64,
    pen: f64,
    mse: f64,
    acc: f64,
    masked: usize,
    audio_seconds: f64,
    /// Time the step waited for its batches.
    data_wait: Duration,
    /// Worker time spent preparing them.
    data_busy: Duration,
}

/// Forward and backward of every micro-batch of `step`, gradients accumulating (scaled by 1/k).
fn accumulate_gradients(
    cfg: &TrainConfig,
    model: &mut Mert,
    on_device: &mut Option<CudaTrainer>,
    heads: &HeadsConfig,
    batches: &mut Prefetcher<'_>,
    step: usize,
    workers: usize,
) -> Result<StepSums> {
    let stage = &cfg.stages[cfg.locate(step).0];
    let o = &cfg.objective;
    let weights = LossWeights {
        codebook: o.codebook_weight,
        feature_penalty: o.feature_penalty_weight,
        cqt: o.cqt_weight,
    };
    let k = stage.grad_accumulation as f64;
    let mut sums = StepSums {
        loss: 0.0,
        ce: 0.0,
        pen: 0.0,
        mse: 0.0,
        acc: 0.0,
        masked: 0,
        audio_seconds: 0.0,
        data_wait: Duration::ZERO,
        data_busy: Duration::ZERO,
    };
    for m in 0..stage.grad_accumulation {
        let (prepared, waited) = batches.next_batch()?;
        ensure!(
            (prepared.step, prepared.micro) == (step, m),
            "input pipeline out of order: got micro-batch {} of step {}, expected {m} of {step}",
            prepared.micro,
            prepared.step
        );
        sums.data_wait += waited;
        // Inline preparation is the wait itself; counted once.
        if workers > 0 {
            sums.data_busy += prepared.prepare_time;
        } else {
            sums.data_busy += waited;
        }
        let batch = &prepared.batch;
        let fopts = ForwardOptions {
            train: true,
            seed: draw_seed(cfg.seed, step, m, 0xD80F),
            mask_time: None,
            feature_grad_mult: Some(o.feature_grad_mult),
        };
        let scale = 1.0 / stage.grad_accumulation as f32;
        let parts = match on_device.as_mut() {
            Some(t) => t.loss_backward(heads, batch, &weights, &fopts, scale)?,
            None => {
                let mut tape = Tape::new();
                let parts = mert_loss(&mut tape, model, heads, batch, &weights, &fopts)?;
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
        sums.loss += parts.total as f64 / k;
        sums.ce += parts.codebook_ce as f64 / k;
        sums.pen += parts.feature_penalty as f64 / k;
        sums.mse += parts.cqt_mse as f64 / k;
        sums.acc += parts.accuracy as f64 / k;
        sums.masked += parts.masked_frames;
        sums.audio_seconds += prepared.audio_seconds;
    }
    Ok(sums)
}

/// Reports a skipped step; counts consecutive non-finite ones (an f16 overflow is expected, not
/// counted) and fails after [`MAX_CONSECUTIVE_SKIPS`].
fn count_skips(
    skips: &mut usize,
    skipped: bool,
    overflow: bool,
    on_device: Option<&CudaTrainer>,
    step: usize,
    loss: f64,
    norm: f64,
) -> Result<()> {
    if skipped && overflow {
        let scale = on_device
            .and_then(|t| t.scaler.as_ref())
            .map_or(1.0, |s| s.scale);
        eprintln!("step {step}: f16 gradients overflowed; step skipped, loss scale now {scale}");
    } else if skipped {
        *skips += 1;
        eprintln!("step {step}: non-finite loss ({loss}) or gradient (norm {norm}); step skipped");
        if *skips >= MAX_CONSECUTIVE_SKIPS {
            bail!("{skips} consecutive steps had a non-finite loss or gradient (last at step {step}); stopping. Lower the learning rate or check the data.", skips = *skips);
        }
    } else {
        *skips = 0;
    }
    Ok(())
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
