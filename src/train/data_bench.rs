//! `bench --data`: the training input pipeline alone, on audio files of a real format on disk.
//!
//! Setup (not timed): synthetic clips written as 16-bit WAV at 44.1 kHz (so every draw resamples to
//! 24 kHz) with `tokenize`-style label files of a random-projection teacher (8 x 1024 codes, MERT's
//! shape), and the decoded-file cache off, so every crop decodes and resamples its file as a draw from
//! a large corpus does. Timed: decode + resample alone; whole batches (crop, labels, mask, mixup)
//! without the CQT (the CUDA path, where the device computes it) and with the CPU CQT; first on one
//! thread (per core: audio seconds per second of that thread's CPU time, from
//! /proc/thread-self/schedstat, so other load on the machine does not count; wall time elsewhere),
//! then with `workers` background workers (total, wall time).

use crate::audio::synth::{generate, SynthConfig};
use crate::model::config::MertConfig;
use crate::model::rp_teacher::{RandomProjectionTeacher, RpConfig};
use crate::model::teacher::{label_dataset, Teacher};
use crate::train::config::{DatasetSpec, TrainConfig};
use crate::train::data::{DataPipeline, Dataset};
use crate::train::pipeline::{batch_order, default_depth, BatchRecipe, Prefetcher};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const MERT_CONFIG: &str = include_str!("../../configs/mert-v1-95m.json");
const FILE_RATE: u32 = 44100;

pub struct DataBenchOptions {
    /// Files written (one per synthetic tradition and index) and their length.
    pub files: usize,
    pub file_seconds: f32,
    /// Crops per batch and crop length (MERT: 5 s).
    pub batch: usize,
    pub crop_seconds: f32,
    /// Batches timed per measurement.
    pub batches: usize,
    /// Background workers of the "total" measurement.
    pub workers: usize,
    pub dir: PathBuf,
}

/// Audio seconds per wall second of each measurement.
#[derive(Debug)]
pub struct DataBenchReport {
    pub decode_per_core: f64,
    pub batches_per_core: f64,
    pub batches_cqt_per_core: f64,
    pub batches_total: f64,
    pub batches_cqt_total: f64,
    pub workers: usize,
}

/// Writes the files and their labels into `opts.dir`; returns the paths.
fn write_corpus(opts: &DataBenchOptions, teacher: &dyn Teacher) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let defaults = SynthConfig::default();
    let per = opts.files.div_ceil(defaults.traditions.len().max(1));
    let clips = generate(&SynthConfig {
        sample_rate: FILE_RATE,
        clip_seconds: opts.file_seconds,
        clips_per_tradition: per.max(1),
        ..defaults
    })?;
    let mut paths = Vec::new();
    for clip in clips.iter().take(opts.files) {
        let path = opts.dir.join(format!("{}.wav", clip.name));
        crate::audio::wav::write_wav_i16(&path, &clip.samples, FILE_RATE)?;
        paths.push(path);
    }
    label_dataset(teacher, &opts.dir, false, &indicatif::ProgressBar::hidden())?;
    Ok(paths)
}

/// One stage drawing batches of `opts.batch` crops from the corpus, as many steps as timed.
fn bench_config(opts: &DataBenchOptions) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::preset("demo", &[])?;
    cfg.datasets = vec![DatasetSpec {
        name: "bench".into(),
        path: opts.dir.display().to_string(),
        weight: 1.0,
        replay: false,
    }];
    cfg.stages.truncate(1);
    let s = &mut cfg.stages[0];
    s.steps = opts.batches;
    s.batch_clips = opts.batch;
    s.grad_accumulation = 1;
    s.datasets = vec!["bench".into()];
    s.replay_fraction = 0.0;
    cfg.data.crop_seconds = opts.crop_seconds;
    cfg.data.segment_seconds = opts.file_seconds.max(opts.crop_seconds);
    cfg.objective.codebooks = 8;
    cfg.objective.codebook_size = 1024;
    Ok(cfg)
}

/// CPU time of the calling thread in seconds (Linux); None elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// Runs `work` (which returns audio seconds) on this thread: audio seconds per CPU second of the
/// thread (per wall second where the CPU time is unavailable).
fn per_core(work: impl FnOnce() -> Result<f64>) -> Result<f64> {
    let (t0, c0) = (Instant::now(), thread_cpu_seconds());
    let audio = work()?;
    let wall = t0.elapsed().as_secs_f64();
    let busy = match (c0, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    Ok(audio / busy)
}

/// Audio seconds of every batch of `cfg`, prepared by `workers` (0: on this thread).
fn prepare_all(recipe: &BatchRecipe<'_>, workers: usize) -> Result<f64> {
    let order = batch_order(recipe.cfg, 0, recipe.cfg.total_steps());
    let mut seconds = 0.0;
    std::thread::scope(|scope| -> Result<()> {
        let n = order.len();
        let mut p = Prefetcher::start(scope, recipe, order, workers, default_depth(workers));
        for _ in 0..n {
            seconds += p.next_batch()?.0.audio_seconds;
        }
        Ok(())
    })?;
    Ok(seconds)
}

/// Audio seconds per wall second of preparing every batch with `workers` workers.
fn total_rate(recipe: &BatchRecipe<'_>, workers: usize) -> Result<f64> {
    let t0 = Instant::now();
    let seconds = prepare_all(recipe, workers)?;
    Ok(seconds / t0.elapsed().as_secs_f64())
}

pub fn run(opts: &DataBenchOptions) -> Result<DataBenchReport> {
    let cfg = bench_config(opts)?;
    let teacher: Arc<dyn Teacher> = Arc::new(RandomProjectionTeacher::new(RpConfig {
        codebooks: cfg.objective.codebooks,
        codebook_size: cfg.objective.codebook_size,
        seed: cfg.seed,
        ..Default::default()
    })?);
    let paths = write_corpus(opts, teacher.as_ref())?;
    let rate = teacher.sample_rate();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let decode_per_core = one.install(|| per_core(|| decode_all(&paths, rate)))?;

    let dataset = Dataset::from_path(cfg.datasets[0].clone())?;
    let data =
        DataPipeline::new(vec![dataset], cfg.data.clone(), teacher, cfg.seed)?.with_cache_files(0);
    let model = MertConfig::from_json_str(MERT_CONFIG)?;
    let recipe = |device_cqt| BatchRecipe {
        cfg: &cfg,
        data: &data,
        model: model.clone(),
        device_cqt,
    };
    let (plain, with_cqt) = (recipe(true), recipe(false));
    let batches_per_core = one.install(|| per_core(|| prepare_all(&plain, 0)))?;
    let batches_cqt_per_core = one.install(|| per_core(|| prepare_all(&with_cqt, 0)))?;
    Ok(DataBenchReport {
        decode_per_core,
        batches_per_core,
        batches_cqt_per_core,
        batches_total: total_rate(&plain, opts.workers)?,
        batches_cqt_total: total_rate(&with_cqt, opts.workers)?,
        workers: opts.workers,
    })
}

/// Audio seconds (at the target rate) of decoding and resampling every file once.
fn decode_all(paths: &[PathBuf], rate: u32) -> Result<f64> {
    let mut samples = 0usize;
    for p in paths {
        samples += crate::audio::wav::load_mono(Path::new(p), rate)?.len();
    }
    Ok(samples as f64 / rate as f64)
}
