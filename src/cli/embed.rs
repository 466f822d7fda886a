//! `culturemert-raw embed`: hidden-state embeddings of audio files (the work is in src/embed).
//!
//! * `--out F.safetensors`: one tensor per input in one file, named after the input's file stem; the
//!   first failing input aborts the run.
//! * `--out-dir DIR`: one file per input, `DIR/<relative path>.safetensors`, written as each finishes;
//!   failures are listed in `DIR/errors.tsv` and make the exit code non-zero; `--resume` skips inputs
//!   whose output is valid.

use crate::device::Device;
use crate::embed::out_dir::ERRORS_FILE;
use crate::embed::{
    embed_corpus, embed_to_dir, list_inputs, parse_layers, tensor_name, Backend, EmbedSettings,
    Pool,
};
use crate::model::cuda_mert::Precision;
use crate::model::mert::Mert;
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF-layout model directory (config.json + model.safetensors or pytorch_model.bin).
    #[arg(long)]
    pub model: PathBuf,
    /// cpu | cuda | cuda:N | emu | auto (auto = CUDA if a GPU is usable, else CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Linear-layer and attention arithmetic on a CUDA device: f32 | bf16 | f16 (tensor cores).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Hidden states to keep: `all` (0..=num_layers, 0 = before the transformer) or a list like 0,6,12.
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// none: [layers, frames, hidden]; mean: time-averaged [layers, hidden].
    #[arg(long, default_value = "none")]
    pub pool: String,
    /// Zero-mean / unit-variance normalisation of each file (transformers' Wav2Vec2FeatureExtractor).
    #[arg(long)]
    pub normalize: bool,
    /// Cut long audio into chunks of this many seconds; results are concatenated in time (pooled: averaged).
    #[arg(long)]
    pub chunk_seconds: Option<f64>,
    /// Output safetensors file; one f32 tensor per input, named after the input's file stem.
    #[arg(long, conflicts_with = "out_dir", required_unless_present = "out_dir")]
    pub out: Option<PathBuf>,
    /// Output directory: one safetensors file (tensor `embedding`) per input at DIR/<relative path>.safetensors.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// With --out-dir: skip inputs whose output file exists and is valid for these settings.
    #[arg(long, requires = "out_dir")]
    pub resume: bool,
    /// Audio files (WAV, FLAC, MP3, Ogg Vorbis), directories (searched recursively by extension) and
    /// manifests (.txt/.tsv/.lst: one path per line, relative to the manifest, # comments).
    #[arg(required = true)]
    pub audio: Vec<PathBuf>,
}

fn settings(args: &Args, model: &Mert) -> Result<EmbedSettings> {
    let rate = model.config.sample_rate;
    let chunk = match args.chunk_seconds {
        None => None,
        Some(s) if s > 0.0 && s.is_finite() => Some((s * rate as f64).round() as usize),
        Some(s) => bail!("--chunk-seconds must be positive, got {s}"),
    };
    Ok(EmbedSettings {
        layers: parse_layers(&args.layers, model.config.num_hidden_layers)?,
        pool: Pool::parse(&args.pool)?,
        normalize: args.normalize,
        chunk,
    })
}

fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("static template"));
    bar
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let precision = Precision::parse(&args.precision)?;
    eprintln!("embed: device {device} ({precision})");
    let model = Mert::load(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let settings = settings(&args, &model)?;
    let backend = Backend::for_device(&device, &model, precision)?;
    let inputs = list_inputs(&args.audio)?;
    ensure!(
        !inputs.is_empty(),
        "no audio inputs found in {:?}",
        args.audio
    );
    if let Some(dir) = &args.out_dir {
        let bar = progress_bar("{bar:40} {pos}/{len} files  {elapsed_precise} eta {eta}  {msg}");
        let s = embed_to_dir(&inputs, dir, &settings, &backend, args.resume, &bar)?;
        bar.finish_and_clear();
        eprintln!(
            "{} input(s): {} written, {} skipped (already done), {} failed; {:.1} s of audio",
            s.inputs, s.written, s.skipped, s.failed, s.audio_seconds
        );
        if s.failed > 0 {
            bail!(
                "{} input(s) failed; see {}",
                s.failed,
                dir.join(ERRORS_FILE).display()
            );
        }
        return Ok(());
    }
    let out = args
        .out
        .as_ref()
        .context("give --out FILE or --out-dir DIR")?;
    let mut names = HashSet::new();
    for i in &inputs {
        let n = tensor_name(&i.path)?;
        ensure!(
            names.insert(n.clone()),
            "two inputs share the file name {n:?}; output tensors are named after it (use --out-dir)"
        );
    }
    let bar = progress_bar("{bar:40} {pos}/{len} files  {elapsed_precise} eta {eta}");
    bar.set_length(inputs.len() as u64);
    let mut outputs = Vec::new();
    embed_corpus(&inputs, &settings, &backend, |input, result| {
        let emb = result.with_context(|| format!("embedding {}", input.path.display()))?;
        outputs.push((tensor_name(&input.path)?, emb.tensor));
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    crate::model::weights::write_safetensors(out, &outputs, None)?;
    eprintln!("wrote {} tensors to {}", outputs.len(), out.display());
    Ok(())
}
