//! `culturemert-raw bench-device`: whole training steps (forward with masking, MERT loss, backward,
//! clipping, fused AdamW) of a random-weight model on a CUDA device (GPU or emulator), reporting audio
//! seconds per second, the analytic FLOPs of the step and the FLOP/s achieved, and the peak device memory
//! taken from the allocator. `--device dry-run` runs the same code with kernels skipped and allocations
//! only counted: the memory plan of a full-size step in seconds, on any machine.

use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::device::roofline::{self, Peaks};
use crate::device::{CudaDevice, Device};
use crate::model::config::MertConfig;
use crate::model::cuda_mert::Precision;
use crate::model::mert::{ForwardOptions, Mert};
use crate::tensor::Tensor;
use crate::train::cuda_step::CudaTrainer;
use crate::train::masking::{compute_mask_indices, MaskRng};
use crate::train::objective::{init_heads, HeadsConfig, LossWeights, PretrainBatch};
use crate::train::optim::{AdamW, ParamGroup};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// cuda | cuda:N | emu | dry-run.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// config.json of the model (default: MERT-v1-95M).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Clips per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Clip length in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// f32 | bf16 | f16 (linear layers).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// After the timed steps, profile one more step per kernel: GPU time from CUDA events against
    /// the roofline bound (dry-run / emu: the analytic table for H100 and H200 and its sum).
    #[arg(long)]
    pub profile: bool,
    /// Peaks of the roofline: h100, h200 or a100 (default: from the device name; dry run: H100 and H200).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Override the dense bf16/f16 tensor-core peak, TFLOP/s.
    #[arg(long)]
    pub peak_bf16: Option<f64>,
    /// Override the f32 (CUDA core) peak, TFLOP/s.
    #[arg(long)]
    pub peak_f32: Option<f64>,
    /// Override the DRAM bandwidth, TB/s.
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Override the number of SMs (blocks/SM column).
    #[arg(long)]
    pub sms: Option<u32>,
}

impl Args {
    /// The GPUs the profile's bounds are computed for.
    fn peaks(&self, dev: &CudaDevice) -> Result<Vec<Peaks>> {
        let overrides =
            |p: Peaks| p.with_overrides(self.peak_bf16, self.peak_f32, self.bandwidth, self.sms);
        if let Some(g) = &self.gpu {
            return Ok(vec![overrides(Peaks::lookup(g)?)?]);
        }
        if dev.arch().is_none() {
            return roofline::builtin()
                .into_iter()
                .filter(|p| !p.name.starts_with("A100"))
                .map(overrides)
                .collect();
        }
        let base = Peaks::lookup(&dev.name()).or_else(|e| {
            match (self.peak_bf16, self.peak_f32, self.bandwidth) {
                (Some(_), Some(_), Some(_)) => Ok(Peaks {
                    name: "custom".into(),
                    ..roofline::builtin().remove(0)
                }),
                _ => Err(e),
            }
        })?;
        Ok(vec![overrides(base)?])
    }
}

/// A random pre-training batch: noise audio, uniform teacher codes (8 x 1024) and CQT targets, MERT's
/// masking (p 0.8, span 5, at least 2 spans).
pub fn synthetic_batch(
    config: &MertConfig,
    heads: &HeadsConfig,
    batch: usize,
    samples: usize,
    seed: u64,
) -> PretrainBatch {
    let frames = config.frames_for_samples(samples);
    let mut rng = crate::model::weights::InitRng::new(seed);
    let codebook_size = 1024;
    let audio: Vec<f32> = (0..batch * samples)
        .map(|_| (rng.normal() * 0.1) as f32)
        .collect();
    let codes = (0..batch * heads.codebooks * frames)
        .map(|_| (rng.uniform() * codebook_size as f64) as i32 % codebook_size as i32)
        .collect();
    let cqt = (0..batch * frames * heads.cqt_bins)
        .map(|_| rng.uniform() as f32)
        .collect();
    let mask = compute_mask_indices(
        batch,
        frames,
        &vec![frames; batch],
        0.8,
        5,
        2,
        &mut MaskRng::new(seed ^ 3),
    )
    .into_iter()
    .map(u8::from)
    .collect();
    PretrainBatch {
        audio: Tensor::from_f32(&[batch, samples], audio),
        codes,
        code_frames: frames,
        codebook_size,
        cqt,
        cqt_frames: frames,
        mask,
        clean_audio: None,
    }
}

/// FLOPs (multiply-add = 2) of one forward pass: convs, projections, attention, FFN and the loss heads
/// on `masked` frames. A training step is counted as 3x (backward = 2x forward).
pub fn forward_flops(
    cfg: &MertConfig,
    heads: &HeadsConfig,
    batch: usize,
    samples: usize,
    masked: usize,
) -> f64 {
    let (b, h, i) = (
        batch as f64,
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
    );
    let mut flops = 0.0;
    let (mut len, mut cin) = (samples, 1usize);
    for l in 0..cfg.conv_dim.len() {
        let (k, s, cout) = (cfg.conv_kernel[l], cfg.conv_stride[l], cfg.conv_dim[l]);
        len = (len - k) / s + 1;
        flops += 2.0 * b * (cout * len * cin * k) as f64;
        cin = cout;
    }
    let t = len as f64;
    flops += 2.0 * b * t * cin as f64 * h; // feature projection
    let (kp, g) = (
        cfg.num_conv_pos_embeddings as f64,
        cfg.num_conv_pos_embedding_groups as f64,
    );
    flops += 2.0 * b * h * (t + 1.0) * (h / g) * kp; // positional conv
    let per_layer = 2.0 * b * t * (4.0 * h * h + 2.0 * h * i) + 4.0 * b * t * t * h;
    flops += per_layer * cfg.num_hidden_layers as f64;
    let n = masked as f64;
    let kd = (heads.codebooks * heads.final_dim) as f64;
    flops += 2.0 * n * h * kd
        + 2.0 * n * kd * heads.codewords as f64
        + 2.0 * n * h * heads.cqt_bins as f64;
    flops
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        args.steps > 0 && args.batch > 0 && args.seconds > 0.0,
        "--steps, --batch and --seconds must be positive"
    );
    let dev = match args.device.as_str() {
        "dry-run" => CudaDevice::dry_run(),
        other => match Device::parse(other)? {
            Device::Cuda(d) => d,
            Device::Cpu => anyhow::bail!("bench-device needs a CUDA device (cuda, emu or dry-run); `bench --train-step` times the CPU"),
        },
    };
    let precision = Precision::parse(&args.precision)?;
    let mut cfg = match &args.config {
        Some(p) => MertConfig::from_file(p)?,
        None => MertConfig::from_json_str(super::bench::MERT_V1_95M_CONFIG)?,
    };
    cfg.layerdrop = 0.0; // a fixed amount of work per step
    let samples = (args.seconds * cfg.sample_rate as f64).round() as usize;
    let heads = HeadsConfig::default();
    let mut model = Mert::random(cfg, 1)?;
    init_heads(&mut model, &heads, 1)?;
    let batch = synthetic_batch(&model.config, &heads, args.batch, samples, 7);
    let masked = batch.mask.iter().filter(|&&m| m != 0).count();
    let step_flops = 3.0 * forward_flops(&model.config, &heads, args.batch, samples, masked);
    let n_params = model.params.num_elements();
    let mut trainer = CudaTrainer::new(&dev, &model, precision)?;
    drop(model);
    let opt = AdamW::new(vec![ParamGroup::all((0.9, 0.98), 1e-6, 0.01)])?;
    let mut times = Vec::new();
    let mut peak = 0;
    let loss_weights = LossWeights::default();
    let mut step = |seed: u64| -> Result<()> {
        trainer.zero_grads()?;
        let opts = ForwardOptions {
            train: true,
            seed,
            mask_time: None,
            feature_grad_mult: Some(0.1),
        };
        trainer.loss_backward(&heads, &batch, &loss_weights, &opts, 1.0)?;
        trainer.clip_grad_norm(1.0)?;
        trainer.adamw_step(&opt, 1e-4)?;
        dev.synchronize()
    };
    for s in 0..=args.steps {
        dev.memory().reset_peak();
        let t0 = Instant::now();
        step(s as u64)?;
        peak = peak.max(dev.memory().peak_bytes());
        if s > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let profile = if args.profile {
        let peaks = args.peaks(&dev)?;
        dev.start_profile();
        step(args.steps as u64 + 1)?;
        Some((dev.finish_profile()?, peaks))
    } else {
        None
    };
    let resident = dev.memory().live_bytes(); // after a step: moments exist, activations are freed
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let audio_seconds = args.seconds * args.batch as f64;
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    println!(
        "device {}, precision {precision}, {n_params} parameters, batch {} x {} s ({masked} masked frames)",
        dev.name(),
        args.batch,
        args.seconds
    );
    println!(
        "memory: peak {:.3} GiB during a step (parameters + gradients + AdamW moments resident: {:.3} GiB)",
        gib(peak),
        gib(resident)
    );
    println!("step FLOPs (analytic, 3x forward): {:.3e}", step_flops);
    if dev.is_dry_run() {
        println!("dry run: kernels were not executed, so there are no timings");
    } else {
        println!(
            "step: median {median:.3} s, min {:.3} s over {} steps; {:.2} audio-s/s; {:.3e} FLOP/s",
            times[0],
            times.len(),
            audio_seconds / median,
            step_flops / median
        );
    }
    println!(
        "bench-device peak_bytes={peak} resident_bytes={resident} step_flops={step_flops:.4e} median_s={median:.4}"
    );
    if let Some((records, peaks)) = profile {
        let timed = records.iter().all(|r| r.gpu_ms.is_some()) && !records.is_empty();
        println!(
            "\nprofile of one step ({} launches){}:",
            records.len(),
            if timed {
                ", GPU time from CUDA events around each launch"
            } else {
                ": analytic cost and roofline bound (no GPU times on this device)"
            }
        );
        if timed {
            super::device_profile::print_timed(&records, &peaks[0]);
        } else {
            super::device_profile::print_analytic(&records, &peaks);
        }
    }
    Ok(())
}
