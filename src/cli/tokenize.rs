//! `culturemert-raw tokenize`: teacher codes of audio files.
//!
//! * `--out OUT.safetensors AUDIO...`: one I64 tensor [codebooks, frames] per input, named after its
//!   file stem (as `cqt`), metadata = the teacher's label metadata plus `source.<name>` paths.
//! * `--dataset DIR`: every audio file under DIR (recursive; wav, flac, mp3, ogg) gets a label file
//!   beside it (src/model/teacher.rs format; up-to-date ones, same teacher params and newer than the
//!   audio, are read instead of recomputed unless `--force`), and `DIR/token_histogram.safetensors`
//!   (src/eval/similarity.rs format) counts every code of every file, dataset name = DIR's name.
//!
//! Audio is mixed to mono and resampled to the teacher's rate (24 kHz). The work is done by
//! `write_code_file` and `label_dataset` in src/model/teacher.rs.

use crate::model::rp_teacher::{RandomProjectionTeacher, RpConfig};
use crate::model::teacher::{find_audio, label_dataset, write_code_file, Teacher};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TeacherKind {
    /// BEST-RQ-style random projection of log-mel frames (no weights needed).
    RandomProjection,
    /// EnCodec 24 kHz, 8 x 1024 codes at 6 kbps (needs --model).
    Encodec,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value = "random-projection")]
    pub teacher: TeacherKind,
    /// EnCodec model directory (transformers layout), for --teacher encodec.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Number of codebooks (random-projection).
    #[arg(long, default_value_t = 8)]
    pub codebooks: usize,
    /// Codewords per codebook (random-projection).
    #[arg(long, default_value_t = 1024)]
    pub codebook_size: usize,
    /// Seed of the projections and codebooks (random-projection).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output safetensors file (one I64 tensor [codebooks, frames] per input, named after its stem).
    #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
    pub out: Option<PathBuf>,
    /// Label every audio file under DIR (recursive) and write DIR/token_histogram.safetensors.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Recompute label files even when they are up to date (--dataset).
    #[arg(long)]
    pub force: bool,
    /// cpu | auto. The teachers run on the CPU only (auto = cpu); cuda / emu are refused.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Audio files (WAV, FLAC, MP3, Ogg).
    #[arg(conflicts_with = "dataset", required_unless_present = "dataset")]
    pub inputs: Vec<PathBuf>,
}

/// The teacher selected by the arguments.
pub fn build_teacher(args: &Args) -> Result<Box<dyn Teacher>> {
    match args.teacher {
        TeacherKind::RandomProjection => Ok(Box::new(RandomProjectionTeacher::new(RpConfig {
            codebooks: args.codebooks,
            codebook_size: args.codebook_size,
            seed: args.seed,
            ..RpConfig::default()
        })?)),
        TeacherKind::Encodec => match &args.model {
            Some(dir) => Ok(Box::new(crate::model::encodec::EncodecTeacher::load(dir)?)),
            None => bail!("--teacher encodec needs --model DIR (an HF EncodecModel directory)"),
        },
    }
}

fn progress(n: usize) -> Result<ProgressBar> {
    let bar = ProgressBar::new(n as u64);
    if n > 1 {
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .context("progress bar template")?,
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    Ok(bar)
}

/// The device a teacher runs on: the CPU, the only one with a teacher implementation.
pub fn resolve_device(spec: &str) -> Result<&'static str> {
    match spec {
        "cpu" | "auto" => Ok("cpu"),
        "emu" | "cuda" => bail!(
            "--device {spec}: the tokenizer teachers have no CUDA implementation; use --device cpu (or auto)"
        ),
        s if s.starts_with("cuda:") => bail!(
            "--device {s}: the tokenizer teachers have no CUDA implementation; use --device cpu (or auto)"
        ),
        other => bail!("unknown device {other:?}: expected cpu or auto (teachers run on the CPU)"),
    }
}

pub fn run(args: Args) -> Result<()> {
    let device = resolve_device(&args.device)?;
    eprintln!("tokenize: device {device}");
    let teacher = build_teacher(&args)?;
    if let Some(dir) = &args.dataset {
        let files = find_audio(dir)?.len();
        let bar = progress(files)?;
        let s = label_dataset(teacher.as_ref(), dir, args.force, &bar)?;
        bar.finish_and_clear();
        eprintln!(
            "{}: {} file(s), {} encoded, {} up to date, {} frames; histogram of dataset '{}' in {}",
            dir.display(),
            s.files,
            s.encoded,
            s.reused,
            s.frames,
            s.dataset,
            s.histogram.display()
        );
        return Ok(());
    }
    let out = args
        .out
        .as_ref()
        .context("give --out OUT.safetensors with audio files, or --dataset DIR")?;
    let bar = progress(args.inputs.len())?;
    write_code_file(teacher.as_ref(), &args.inputs, out, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} code tensor(s) to {}",
        args.inputs.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::resolve_device;

    #[test]
    fn teachers_run_on_the_cpu_and_refuse_cuda() {
        assert_eq!(resolve_device("auto").unwrap(), "cpu");
        assert_eq!(resolve_device("cpu").unwrap(), "cpu");
        for d in ["cuda", "cuda:1", "emu"] {
            let e = resolve_device(d).unwrap_err().to_string();
            assert!(e.contains("no CUDA implementation"), "{d}: {e}");
        }
        assert!(resolve_device("tpu").is_err());
    }
}
