//! `culturemert-raw bench`: time the MERT forward (and optionally backward) on the CPU with random weights.

use crate::autograd::Tape;
use crate::model::config::MertConfig;
use crate::model::mert::{ForwardOptions, Mert};
use crate::tensor::Tensor;
use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::time::Instant;

/// The MERT-v1-95M config.json as on the hub (SPEC-MERT.md section 1).
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
    let samples = (args.seconds * cfg.sample_rate as f64).round() as usize;
    let model = Mert::random(cfg, 1)?;
    let mut rng = crate::model::weights::InitRng::new(7);
    let audio = Tensor::from_f32(
        &[args.batch, samples],
        (0..args.batch * samples)
            .map(|_| (rng.normal() * 0.1) as f32)
            .collect(),
    );
    let audio_seconds = args.seconds * args.batch as f64;
    let time = |train: bool| -> Result<Vec<f64>> {
        let mut times = Vec::new();
        let mut params = model.params.clone();
        for i in 0..=args.iters {
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
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
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
    Ok(())
}
