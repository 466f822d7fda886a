//! `culturemert-raw bench`: time the MERT forward (and optionally backward) on the CPU with random weights.
//! `--train-step`: one full pre-training step as `train` runs it (dropout on, LayerDrop off so the work
//! is fixed): forward with masking, the MERT loss (8 x 1024 codebook NCE + CQT MSE + feature penalty),
//! backward, grad-norm clipping and AdamW; counterpart of reference/bench_train.py.

use crate::autograd::Tape;
use crate::model::config::MertConfig;
use crate::model::mert::{ForwardOptions, Mert};
use crate::ops::gemm::sgemm;
use crate::tensor::Tensor;
use crate::train::objective::{init_heads, mert_loss, HeadsConfig, LossWeights};
use crate::train::optim::{clip_grad_norm, AdamW, ParamGroup};
use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::time::Instant;

/// The MERT-v1-95M config.json as on the hub (docs/model.md section 2).
pub const MERT_V1_95M_CONFIG: &str = include_str!("../../configs/mert-v1-95m.json");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// config.json to benchmark (default: MERT-v1-95M).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Clip length in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Also time forward + backward of sum(last hidden state).
    #[arg(long)]
    pub train: bool,
    /// Time only full training steps: forward + MERT loss + backward + clipping + AdamW.
    #[arg(long, conflicts_with = "train")]
    pub train_step: bool,
    /// After the timed runs, run one more with per-op timing and print where the time goes, against
    /// the GEMM ceiling of this machine (measured here).
    #[arg(long)]
    pub profile: bool,
    /// Time the training input pipeline alone instead: `--iters` batches of `--batch` crops of
    /// `--seconds`, drawn from 30 s 44.1 kHz WAV files written to a temporary directory.
    #[arg(long, conflicts_with_all = ["train", "train_step", "profile"])]
    pub data: bool,
    /// Background workers of `--data`'s total figure (default: --threads, else all cores).
    #[arg(long)]
    pub data_workers: Option<usize>,
}

/// Peak resident set size of this process (VmHWM), in MB; None where /proc is unavailable.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: Args) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => MertConfig::from_file(p)?,
        None => MertConfig::from_json_str(MERT_V1_95M_CONFIG)?,
    };
    ensure!(
        args.iters > 0 && args.batch > 0 && args.seconds > 0.0,
        "--iters, --batch and --seconds must be positive"
    );
    let threads = args.threads.unwrap_or_else(crate::ops::gemm::num_threads);
    crate::ops::gemm::set_num_threads(threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    if args.data {
        return data(&args, threads);
    }
    let samples = (args.seconds * cfg.sample_rate as f64).round() as usize;
    if args.train_step {
        return train_step(&args, cfg, samples, threads, &pool);
    }
    let model = Mert::random(cfg, 1)?;
    let mut rng = crate::model::weights::InitRng::new(7);
    let audio = Tensor::from_f32(
        &[args.batch, samples],
        (0..args.batch * samples)
            .map(|_| (rng.normal() * 0.1) as f32)
            .collect(),
    );
    let audio_seconds = args.seconds * args.batch as f64;
    let mut params = model.params.clone();
    let mut run_once = |train: bool| -> Result<f64> {
        params.zero_grad();
        let t0 = Instant::now();
        pool.install(|| -> Result<()> {
            let mut tape = if train { Tape::new() } else { Tape::no_grad() };
            let out = model.forward(&mut tape, &audio, None, &ForwardOptions::default())?;
            if train {
                let last = out.hidden_states.last().unwrap();
                let seed = vec![1.0; last.value.numel()];
                tape.backward(vec![(last, seed)], &mut params)?;
            }
            Ok(())
        })?;
        Ok(t0.elapsed().as_secs_f64())
    };
    let mut time = |train: bool| -> Result<Vec<f64>> {
        run_once(train)?; // warm-up
        let mut times = (0..args.iters)
            .map(|_| run_once(train))
            .collect::<Result<Vec<f64>>>()?;
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(times)
    };
    let report = |what: &str, t: &[f64]| {
        let median = t[t.len() / 2];
        println!(
            "{what}: median {median:.3} s, min {:.3} s over {} runs; {:.2} audio-s/s; threads {threads}; batch {} x {} s",
            t[0],
            t.len(),
            audio_seconds / median,
            args.batch,
            args.seconds
        );
        println!(
            "bench {what} median_s={median:.4} min_s={:.4} threads={threads}",
            t[0]
        );
    };
    report("forward", &time(false)?);
    if args.train {
        report("forward+backward", &time(true)?);
    }
    if args.profile {
        let what = if args.train {
            "forward+backward"
        } else {
            "forward"
        };
        crate::ops::profile::enable(true);
        let run = run_once(args.train);
        crate::ops::profile::enable(false);
        print_profile(what, run?, &pool);
    }
    Ok(())
}

/// `--data`: the input pipeline's throughput per core and with workers.
fn data(args: &Args, threads: usize) -> Result<()> {
    let workers = args.data_workers.unwrap_or(threads).max(1);
    let dir = std::env::temp_dir().join(format!("culturemert-bench-data-{}", std::process::id()));
    let opts = crate::train::data_bench::DataBenchOptions {
        files: 10,
        file_seconds: 30.0,
        batch: args.batch,
        crop_seconds: args.seconds as f32,
        batches: args.iters,
        workers,
        dir: dir.clone(),
    };
    let report = crate::train::data_bench::run(&opts);
    let _ = std::fs::remove_dir_all(&dir);
    let r = report?;
    println!(
        "input pipeline ({} x {} s crops of 30 s 44.1 kHz WAV, labels from files, no file cache), audio-s/s (per core: per CPU-second of one thread; total: per wall second):",
        args.batch, args.seconds
    );
    println!(
        "  decode + resample only        {:10.1} per core",
        r.decode_per_core
    );
    println!(
        "  batches, CQT on the device    {:10.1} per core  {:10.1} with {} workers",
        r.batches_per_core, r.batches_total, r.workers
    );
    println!(
        "  batches, CQT on the CPU       {:10.1} per core  {:10.1} with {} workers",
        r.batches_cqt_per_core, r.batches_cqt_total, r.workers
    );
    println!(
        "bench data decode_per_core={:.1} batches_per_core={:.1} batches_cqt_per_core={:.1} batches_total={:.1} batches_cqt_total={:.1} workers={}",
        r.decode_per_core, r.batches_per_core, r.batches_cqt_per_core, r.batches_total, r.batches_cqt_total, r.workers
    );
    Ok(())
}

/// Median (and min) seconds of `iters` full training steps after one warm-up step.
fn train_step(
    args: &Args,
    mut cfg: MertConfig,
    samples: usize,
    threads: usize,
    pool: &rayon::ThreadPool,
) -> Result<()> {
    cfg.layerdrop = 0.0; // a fixed amount of work per step (the reference does the same)
    let mut model = Mert::random(cfg, 1)?;
    let heads = HeadsConfig::default();
    init_heads(&mut model, &heads, 1)?;
    let b = args.batch;
    let batch = super::device_bench::synthetic_batch(&model.config, &heads, b, samples, 7);
    let mut opt = AdamW::new(vec![ParamGroup::all((0.9, 0.98), 1e-6, 0.01)])?;
    let mut loss = 0.0;
    let mut step = |i: usize| -> Result<f64> {
        model.params.zero_grad();
        let t0 = Instant::now();
        pool.install(|| -> Result<()> {
            let mut tape = Tape::new();
            let opts = ForwardOptions {
                train: true,
                seed: i as u64,
                mask_time: None,
                feature_grad_mult: Some(0.1),
            };
            let parts = mert_loss(
                &mut tape,
                &model,
                &heads,
                &batch,
                &LossWeights::default(),
                &opts,
            )?;
            loss = parts.total.data()[0];
            tape.backward(vec![(&parts.total, vec![1.0])], &mut model.params)?;
            clip_grad_norm(&mut model.params, 1.0);
            opt.step(&mut model.params, 1e-4)?;
            Ok(())
        })?;
        Ok(t0.elapsed().as_secs_f64())
    };
    step(0)?; // warm-up
    let mut times = (1..=args.iters)
        .map(&mut step)
        .collect::<Result<Vec<f64>>>()?;
    if args.profile {
        crate::ops::profile::enable(true);
        let run = step(args.iters + 1);
        crate::ops::profile::enable(false);
        print_profile("training step", run?, pool);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let audio_seconds = args.seconds * b as f64;
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    println!(
        "train_step: median {median:.3} s, min {:.3} s over {} steps; {:.2} audio-s/s; peak RSS {rss:.0} MB; \
         threads {threads}; batch {b} x {} s; last loss {loss:.3}",
        times[0],
        times.len(),
        audio_seconds / median,
        args.seconds
    );
    println!(
        "bench train_step median_s={median:.4} min_s={:.4} audio_s_per_s={:.3} peak_rss_mb={rss:.0} threads={threads}",
        times[0],
        audio_seconds / median
    );
    Ok(())
}

/// GFLOP/s of the f32 GEMM on this machine: the best of 20 runs each of a square 1024³ product and
/// the MERT-95M FFN shape (374 x 3072 x 768), the ceiling the profile compares each op with. On a
/// noisy machine it can still come out low (an op then shows more than 100%).
fn gemm_ceiling(pool: &rayon::ThreadPool) -> f64 {
    [(1024, 1024, 1024), (374, 3072, 768)]
        .iter()
        .map(|&(m, n, k)| {
            let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
            let mut c = vec![0.0f32; m * n];
            let mut best = f64::INFINITY;
            for _ in 0..20 {
                let t0 = Instant::now();
                pool.install(|| sgemm(m, n, k, &a, false, &b, false, &mut c, false));
                best = best.min(t0.elapsed().as_secs_f64());
            }
            2.0 * (m * n * k) as f64 / best / 1e9
        })
        .fold(0.0, f64::max)
}

/// The per-op table of one profiled run: op, calls, ms, share of the run, GFLOP/s and the share of
/// the GEMM ceiling (ops with analytic FLOPs only); the rest of the wall time is the tape itself
/// (buffer allocation, copies, reshapes, gradient accumulation).
fn print_profile(what: &str, wall: f64, pool: &rayon::ThreadPool) {
    let mut stats = crate::ops::profile::take();
    stats.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let ceiling = gemm_ceiling(pool);
    println!(
        "profile of one {what} ({:.0} ms); GEMM ceiling {ceiling:.1} GFLOP/s",
        wall * 1e3
    );
    println!("| op | calls | ms | share | GFLOP/s | of ceiling |");
    println!("|---|---|---|---|---|---|");
    let mut counted = 0.0;
    for s in &stats {
        counted += s.seconds;
        let (rate, of) = if s.flops > 0.0 {
            let g = s.flops / s.seconds / 1e9;
            (format!("{g:.1}"), format!("{:.0}%", 100.0 * g / ceiling))
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "| {} | {} | {:.1} | {:.1}% | {rate} | {of} |",
            s.name,
            s.calls,
            s.seconds * 1e3,
            100.0 * s.seconds / wall
        );
    }
    let rest = (wall - counted).max(0.0);
    println!(
        "| tape (allocation, copies, reshapes, accumulation) | - | {:.1} | {:.1}% | - | - |",
        rest * 1e3,
        100.0 * rest / wall
    );
}
