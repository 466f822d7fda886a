//! `culturemert-raw probe`: MARBLE-style probing of frozen MERT embeddings on a tagged audio dataset.

use crate::device::Device;
use crate::embed::Backend;
use crate::eval::probe::data::{
    embed_clip, load_cache, read_tag_table, save_cache, CacheKey, ClipEmbeddings, TagTable,
};
use crate::eval::probe::{run_probe, LayerChoice, ProbeConfig, ProbeData, ProbeReport};
use crate::model::cuda_mert::Precision;
use crate::model::mert::Mert;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF-layout model directory (config.json + model.safetensors or pytorch_model.bin).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset directory; audio paths in the tag table are relative to it.
    #[arg(long)]
    pub data: PathBuf,
    /// Tag table (CSV or TSV with columns file, split, tags; tags `;`-separated). Default <data>/tags.csv.
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Hidden state fed to the head: 0..=num_layers (0 = before the transformer), or `all` for learned
    /// softmax weights over layers 1..=num_layers.
    #[arg(long, default_value = "all")]
    pub layer: String,
    /// Number of seeds (mean and standard deviation reported over them).
    #[arg(long, default_value_t = 5)]
    pub seeds: usize,
    /// First seed; seeds are seed, seed+1, ...
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Long files are embedded in chunks of this many seconds; chunk predictions are averaged per clip.
    #[arg(long, default_value_t = 30.0)]
    pub chunk_seconds: f64,
    /// Maximum training epochs.
    #[arg(long, default_value_t = 100)]
    pub max_epochs: usize,
    /// Early-stopping patience (epochs without a better validation ROC-AUC).
    #[arg(long, default_value_t = 10)]
    pub patience: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Embedding cache (safetensors): read if it exists and matches, else computed and written.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Write every number (per seed, per tag) as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the MERT forward (the embeddings) runs: cpu | cuda | cuda:N | emu | auto (a usable GPU, else
    /// the CPU). The probe head (a small MLP) always trains on the CPU.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `all` or a hidden-state index 0..=num_layers.
pub fn parse_layer(spec: &str, num_layers: usize) -> Result<LayerChoice> {
    if spec == "all" {
        return Ok(LayerChoice::All);
    }
    let l: usize = spec
        .trim()
        .parse()
        .with_context(|| format!("--layer: {spec:?} is neither `all` nor a layer index"))?;
    ensure!(
        l <= num_layers,
        "--layer {l} does not exist (the model has hidden states 0..={num_layers})"
    );
    Ok(LayerChoice::Single(l))
}

fn embed_all(model: &Backend, table: &TagTable, chunk: usize) -> Result<ClipEmbeddings> {
    let cfg = model.config();
    let rate = cfg.sample_rate;
    let bar = indicatif::ProgressBar::new(table.clips.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "embedding {bar:40} {pos}/{len} clips  {elapsed_precise} eta {eta}",
        )
        .expect("static template"),
    );
    let mut per_clip = Vec::with_capacity(table.clips.len());
    for clip in &table.clips {
        let samples = crate::audio::wav::load_mono(&clip.path, rate)
            .with_context(|| format!("reading {}", clip.path.display()))?;
        per_clip.push(
            embed_clip(model, samples, chunk)
                .with_context(|| format!("embedding {}", clip.path.display()))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ClipEmbeddings {
        states: cfg.num_hidden_layers + 1,
        hidden: cfg.hidden_size,
        per_clip,
    })
}

fn print_report(r: &ProbeReport) {
    println!(
        "probe: {}; {} tags; clips train/valid/test = {}/{}/{}; {} seed(s)",
        r.layer,
        r.tags.len(),
        r.clips[0],
        r.clips[1],
        r.clips[2],
        r.seeds.len()
    );
    println!(
        "{:>8} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "seed", "epochs", "best", "valid_auc", "test_auc", "test_ap", "micro_f1", "macro_f1"
    );
    for s in &r.seeds {
        println!(
            "{:>8} {:>6} {:>5} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            s.seed,
            s.epochs_run,
            s.best_epoch,
            s.valid.roc_auc,
            s.test.roc_auc,
            s.test.average_precision,
            s.test.micro_f1,
            s.test.macro_f1
        );
    }
    let ms = |m: crate::eval::probe::MeanStd| format!("{:.4}±{:.4}", m.mean, m.std);
    println!(
        "test (mean±std over seeds): ROC-AUC {}  AP {}  micro-F1 {}  macro-F1 {}",
        ms(r.test_roc_auc),
        ms(r.test_average_precision),
        ms(r.test_micro_f1),
        ms(r.test_macro_f1)
    );
    if let Some(s) = r.seeds.first() {
        for (split, sc) in [("valid", &s.valid), ("test", &s.test)] {
            let (auc, ap) = (&sc.skipped_roc_auc, &sc.skipped_average_precision);
            if !auc.is_empty() || !ap.is_empty() {
                let shown: Vec<&str> = auc.iter().take(6).map(String::as_str).collect();
                println!(
                    "note: {} of {} tags have a single class in {split} and are left out of its macro ROC-AUC ({} of macro AP) \
                     (Skip policy): {}{} (full lists in --out)",
                    auc.len(),
                    r.tags.len(),
                    ap.len(),
                    shown.join(", "),
                    if auc.len() > shown.len() { ", ..." } else { "" }
                );
            }
        }
        if !s.layer_weights.is_empty() {
            let w: Vec<String> = s.layer_weights.iter().map(|w| format!("{w:.3}")).collect();
            println!(
                "layer weights (seed {}, layers 1..): {}",
                s.seed,
                w.join(" ")
            );
        }
    }
}

/// Identity of a model directory for the cache: its canonical path plus size and modification time of
/// the files that define it (so a retrained model at the same path does not reuse stale embeddings).
fn model_key(dir: &Path) -> String {
    let mut key = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    for name in ["config.json", "model.safetensors", "pytorch_model.bin"] {
        if let Ok(meta) = std::fs::metadata(dir.join(name)) {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            key += &format!(" {name}:{}:{mtime}", meta.len());
        }
    }
    key
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::parse(&args.device)?;
    eprintln!("probe: embeddings on {device}, probe head on cpu");
    ensure!(
        args.chunk_seconds.is_finite() && args.chunk_seconds > 0.0,
        "--chunk-seconds must be positive, got {}",
        args.chunk_seconds
    );
    let tags_path = args
        .tags
        .clone()
        .unwrap_or_else(|| args.data.join("tags.csv"));
    let table = read_tag_table(&tags_path, &args.data)?;
    let model = Mert::load(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let layer = parse_layer(&args.layer, model.config.num_hidden_layers)?;
    let chunk = (args.chunk_seconds * model.config.sample_rate as f64).round() as usize;
    let key = CacheKey {
        model: model_key(&args.model),
        chunk_samples: chunk,
        states: model.config.num_hidden_layers + 1,
        hidden: model.config.hidden_size,
    };
    let emb = match &args.cache {
        Some(p) if p.exists() => {
            eprintln!("reading embeddings from {}", p.display());
            load_cache(p, &table, &key)?
        }
        cache => {
            let backend = Backend::for_device(&device, &model, Precision::F32)?;
            let emb = embed_all(&backend, &table, chunk)?;
            if let Some(p) = cache {
                save_cache(p, &table, &emb, &key)?;
                eprintln!("wrote embedding cache {}", p.display());
            }
            emb
        }
    };
    let data = ProbeData {
        emb,
        labels: table.label_matrix(),
        splits: table.clips.iter().map(|c| c.split).collect(),
        tags: table.vocab.clone(),
    };
    let cfg = ProbeConfig {
        max_epochs: args.max_epochs,
        patience: args.patience,
        batch: args.batch_size,
        lr: args.lr,
        ..ProbeConfig::default()
    };
    let report = run_probe(&data, layer, &cfg, args.seed, args.seeds)?;
    print_report(&report);
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
