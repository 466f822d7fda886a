//! `culturemert-raw train`: continual pre-training (or pre-training from scratch) of a MERT model.
//! With no arguments: the embedded demo (tiny model, synthetic multi-cultural corpus, random-projection
//! teacher, western pre-training then the two-stage CultureMERT recipe).

use crate::audio::synth::{generate, SynthConfig};
use crate::model::config::MertConfig;
use crate::model::mert::Mert;
use crate::model::teacher::Teacher;
use crate::train::config::{DatasetSpec, TrainConfig, PRESETS};
use crate::train::data::{DataPipeline, Dataset};
use crate::train::objective::{init_heads, load_heads, save_heads, HeadsConfig};
use crate::train::plot::write_loss_svg;
use crate::train::trainer::{train, RunOptions};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The demo's tiny model (hop 320 like MERT, 64 hidden, 2 layers).
pub const TINY_DEMO_CONFIG: &str = include_str!("../../configs/tiny-demo.json");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset shipped with the binary (see --list-presets); default "demo".
    #[arg(long, conflicts_with = "config")]
    pub preset: Option<String>,
    /// A training config TOML file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config value: --set stages.0.steps=100 --set objective.codebook_weight=10
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Initialise from an HF MERT directory (config.json + weights; heads.safetensors beside them if present).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Teacher model directory (EnCodec, for teacher = "encodec" without precomputed label files).
    #[arg(long)]
    pub teacher_model: Option<PathBuf>,
    /// A dataset: NAME=PATH[:WEIGHT] (directory of audio or manifest). Repeatable.
    #[arg(long = "data", value_name = "NAME=PATH[:WEIGHT]")]
    pub data: Vec<String>,
    /// A replay dataset (e.g. Western music): NAME=PATH[:WEIGHT]. Repeatable.
    #[arg(long = "replay", value_name = "NAME=PATH[:WEIGHT]")]
    pub replay: Vec<String>,
    /// Run directory (default runs/<config name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the run directory's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Checkpoint every N optimizer steps (and at every stage end).
    #[arg(long, default_value_t = 20)]
    pub checkpoint_every: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu | cuda | cuda:N | emu (host emulator) | auto (a usable GPU, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Linear-layer arithmetic on a CUDA device: f32 | bf16 | f16 (f16 with dynamic loss scaling).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Threads preparing batches (decode, resample, crop, labels, CQT, mask, mixup) ahead of the step;
    /// 0 prepares them inline. Default: cores - 1, at most 4. Batches do not depend on it.
    #[arg(long)]
    pub data_workers: Option<usize>,
    /// On a CUDA device, compute the CQT targets on the host (in the data workers) instead of the device.
    #[arg(long)]
    pub host_cqt: bool,
    /// Stop after N optimizer steps of this invocation (as if interrupted; resume with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the presets and exit.
    #[arg(long)]
    pub list_presets: bool,
}

fn parse_dataset(spec: &str, replay: bool) -> Result<DatasetSpec> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("dataset {spec:?}: expected NAME=PATH[:WEIGHT]"))?;
    let (path, weight) = match rest.rsplit_once(':') {
        Some((p, w)) if w.parse::<f32>().is_ok() => (p, w.parse::<f32>().unwrap()),
        _ => (rest, 1.0),
    };
    ensure!(
        !name.is_empty() && !path.is_empty() && weight > 0.0,
        "dataset {spec:?}: empty name/path or non-positive weight"
    );
    Ok(DatasetSpec {
        name: name.into(),
        path: path.into(),
        weight,
        replay,
    })
}

/// Datasets of the run; `embedded:synth/<tradition>` paths come from the in-process synthetic corpus.
fn build_datasets(specs: &[DatasetSpec], seed: u64) -> Result<Vec<Dataset>> {
    let mut synth: Option<HashMap<String, Vec<Vec<f32>>>> = None;
    let mut out = Vec::new();
    for spec in specs {
        if let Some(tradition) = spec.path.strip_prefix("embedded:synth/") {
            if synth.is_none() {
                let cfg = SynthConfig {
                    seed,
                    clips_per_tradition: 24,
                    ..SynthConfig::default()
                };
                let mut by: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
                for clip in generate(&cfg)? {
                    by.entry(clip.tradition.clone())
                        .or_default()
                        .push(clip.samples);
                }
                synth = Some(by);
            }
            let clips = synth
                .as_ref()
                .unwrap()
                .get(tradition)
                .cloned()
                .with_context(|| format!("no synthetic tradition {tradition:?}"))?;
            out.push(Dataset::from_memory(spec.clone(), clips)?);
        } else {
            out.push(Dataset::from_path(spec.clone())?);
        }
    }
    Ok(out)
}

fn build_teacher(cfg: &TrainConfig, teacher_model: Option<&Path>) -> Result<Arc<dyn Teacher>> {
    let o = &cfg.objective;
    match o.teacher.as_str() {
        "random-projection" => {
            let rp = crate::model::rp_teacher::RpConfig {
                codebooks: o.codebooks,
                codebook_size: o.codebook_size,
                seed: cfg.seed,
                ..Default::default()
            };
            Ok(Arc::new(
                crate::model::rp_teacher::RandomProjectionTeacher::new(rp)?,
            ))
        }
        "encodec" => match teacher_model {
            Some(dir) => Ok(Arc::new(crate::model::encodec::EncodecTeacher::load(dir)?)),
            None => Ok(Arc::new(LabelFilesOnly {
                codebooks: o.codebooks,
                codebook_size: o.codebook_size,
            })),
        },
        other => bail!("unknown teacher {other:?}"),
    }
}

/// The "encodec" teacher without a model: every clip must have a `tokenize --dataset` label file.
struct LabelFilesOnly {
    codebooks: usize,
    codebook_size: usize,
}

impl Teacher for LabelFilesOnly {
    fn name(&self) -> &str {
        "encodec"
    }
    fn codebooks(&self) -> usize {
        self.codebooks
    }
    fn codebook_size(&self) -> usize {
        self.codebook_size
    }
    fn sample_rate(&self) -> u32 {
        24000
    }
    fn hop(&self) -> usize {
        320
    }
    fn encode(&self, _samples: &[f32]) -> Result<Vec<u16>> {
        bail!("a clip has no label file (run `tokenize --teacher encodec --dataset DIR` first, or pass --teacher-model DIR)")
    }
    fn params(&self) -> String {
        "label files only".into()
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.list_presets {
        for (name, text) in PRESETS {
            let cfg = TrainConfig::from_toml(text, &[], name)?;
            println!("{name:22} {} steps  {}", cfg.total_steps(), cfg.description);
        }
        return Ok(());
    }
    let device = crate::device::Device::parse(&args.device)?;
    let precision = crate::model::cuda_mert::Precision::parse(&args.precision)?;
    ensure!(
        precision == crate::model::cuda_mert::Precision::F32 || device.is_cuda(),
        "--precision {precision} needs a CUDA device (--device cuda or emu); the CPU trains in f32"
    );
    if let Some(t) = args.threads {
        ensure!(t > 0, "--threads must be positive");
        crate::ops::gemm::set_num_threads(t);
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let mut cfg = match (&args.config, &args.preset) {
        (Some(p), _) => TrainConfig::from_file(p, &args.overrides)?,
        (None, name) => TrainConfig::preset(name.as_deref().unwrap_or("demo"), &args.overrides)?,
    };
    for d in &args.data {
        cfg.datasets.push(parse_dataset(d, false)?);
    }
    for d in &args.replay {
        cfg.datasets.push(parse_dataset(d, true)?);
    }
    ensure!(
        !cfg.datasets.is_empty(),
        "no datasets: give --data NAME=PATH (and --replay NAME=PATH for replay)"
    );
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let heads_cfg = HeadsConfig {
        codebooks: cfg.objective.codebooks,
        codewords: cfg.objective.codewords,
        ..HeadsConfig::default()
    };
    let mut model = match &args.init {
        Some(dir) => {
            let mut m = Mert::load(dir)?;
            let heads_file = dir.join("heads.safetensors");
            if heads_file.exists() {
                let loaded = load_heads(&mut m, &heads_file, heads_cfg.codebooks)?;
                ensure!(
                    loaded.codewords == heads_cfg.codewords,
                    "{}: {} codewords per codebook, the config says {}",
                    heads_file.display(),
                    loaded.codewords,
                    heads_cfg.codewords
                );
            } else {
                init_heads(&mut m, &heads_cfg, cfg.seed)?;
            }
            m
        }
        None => {
            let mc = match cfg.model_config.as_deref() {
                Some("embedded:tiny") => MertConfig::from_json_str(TINY_DEMO_CONFIG)?,
                None => bail!(
                    "recipe {} continues pre-training: give --init <HF MERT directory> (or set model_config for a run from scratch)",
                    cfg.name
                ),
                Some("embedded:mert-v1-95m") => {
                    MertConfig::from_json_str(crate::cli::bench::MERT_V1_95M_CONFIG)?
                }
                Some(path) => MertConfig::from_file(Path::new(path))?,
            };
            let mut m = Mert::random(mc, cfg.seed)?;
            init_heads(&mut m, &heads_cfg, cfg.seed)?;
            m
        }
    };
    let teacher = build_teacher(&cfg, args.teacher_model.as_deref())?;
    ensure!(
        teacher.codebooks() == cfg.objective.codebooks
            && teacher.codebook_size() == cfg.objective.codebook_size,
        "teacher gives {} x {} codes, the config expects {} x {}",
        teacher.codebooks(),
        teacher.codebook_size(),
        cfg.objective.codebooks,
        cfg.objective.codebook_size
    );
    ensure!(
        teacher.hop() == model.config.hop(),
        "teacher hop {} differs from the model's {}",
        teacher.hop(),
        model.config.hop()
    );
    let datasets = build_datasets(&cfg.datasets, cfg.seed)?;
    let pipeline = DataPipeline::new(datasets, cfg.data.clone(), teacher, cfg.seed)?;
    crate::model::weights::write_atomically(
        &run_dir.join("config.toml"),
        toml::to_string(&cfg)?.as_bytes(),
    )?;
    let data_workers = args
        .data_workers
        .unwrap_or_else(crate::train::pipeline::default_workers);
    eprintln!(
        "training {} ({} steps in {} stages, {} parameters) on {device} into {} ({data_workers} data workers, CQT on the {})",
        cfg.name,
        cfg.total_steps(),
        cfg.stages.len(),
        model.params.num_elements(),
        run_dir.display(),
        if device.is_cuda() && !args.host_cqt { "device" } else { "host" }
    );
    let opts = RunOptions {
        run_dir: run_dir.clone(),
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        stop_after: args.stop_after,
        progress: !args.quiet,
        device: device.clone(),
        precision,
        data_workers,
        queue_depth: crate::train::pipeline::default_depth(data_workers),
        device_cqt: !args.host_cqt,
    };
    train(&cfg, &mut model, &heads_cfg, &pipeline, &opts)?;

    // Final outputs from the whole metrics file (a resumed run included).
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl"))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let points: Vec<(usize, f64)> = rows
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()? as usize, r["loss"].as_f64()?)))
        .collect();
    let mut boundaries = Vec::new();
    let mut start = 0;
    for s in &cfg.stages {
        boundaries.push((start, s.name.clone()));
        start += s.steps;
    }
    write_loss_svg(
        &run_dir.join("loss.svg"),
        &points,
        &boundaries,
        &format!("{}: training loss", cfg.name),
    )?;
    if points.last().map(|p| p.0 + 1) == Some(cfg.total_steps()) {
        model.save(&run_dir.join("model"))?;
        save_heads(&model, &run_dir.join("model").join("heads.safetensors"))?;
        for s in &cfg.stages {
            let stage: Vec<f64> = rows
                .iter()
                .filter(|r| r["stage"] == s.name.as_str())
                .filter_map(|r| r["loss"].as_f64())
                .collect();
            if let (Some(first), Some(last)) = (stage.first(), stage.last()) {
                let n = stage.len().min(10);
                let head: f64 = stage[..n].iter().sum::<f64>() / n as f64;
                let tail: f64 = stage[stage.len() - n..].iter().sum::<f64>() / n as f64;
                eprintln!("{:18} loss {first:.4} -> {last:.4} (mean of first/last {n}: {head:.4} -> {tail:.4})", s.name);
            }
        }
        eprintln!(
            "model written to {} (loss curve: {})",
            run_dir.join("model").display(),
            run_dir.join("loss.svg").display()
        );
    } else {
        eprintln!(
            "stopped before the end; continue with --resume --run-dir {}",
            run_dir.display()
        );
    }
    Ok(())
}
