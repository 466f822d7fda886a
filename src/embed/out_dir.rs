//! `embed --out-dir DIR`: one safetensors file per input at `DIR/<relative path>.safetensors`, written
//! atomically as each input finishes; `--resume` skips inputs whose file is already valid; failures go to
//! `DIR/errors.tsv` (path TAB reason, one line each, flushed as they happen) and the others continue.
//!
//! Each file holds one f32 tensor named [`TENSOR`] and metadata recording the settings (`layers`,
//! `pool`, `normalize`, `chunk_samples`) and the `source` path; a file is valid for resume when it parses
//! and its tensor and metadata agree with the current settings and model width.

use super::corpus::{embed_corpus, CorpusStats, EmbedSettings};
use super::inputs::Input;
use super::Backend;
use crate::model::weights::write_safetensors;
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the tensor in every output file.
pub const TENSOR: &str = "embedding";

/// Name of the failure log in the output directory.
pub const ERRORS_FILE: &str = "errors.tsv";

/// Where an input's embedding goes: `dir/<rel>.safetensors` (`rock/a.wav` -> `rock/a.wav.safetensors`,
/// so `a.wav` and `a.flac` never collide).
pub fn output_path(dir: &Path, input: &Input) -> PathBuf {
    let mut name = dir.join(&input.rel).into_os_string();
    name.push(".safetensors");
    PathBuf::from(name)
}

fn metadata(settings: &EmbedSettings, input: &Input) -> HashMap<String, String> {
    let layers: Vec<String> = settings.layers.iter().map(|l| l.to_string()).collect();
    HashMap::from([
        ("layers".to_string(), layers.join(",")),
        ("pool".to_string(), settings.pool.name().to_string()),
        ("normalize".to_string(), settings.normalize.to_string()),
        (
            "chunk_samples".to_string(),
            settings.chunk.map_or("none".to_string(), |c| c.to_string()),
        ),
        ("source".to_string(), input.path.display().to_string()),
    ])
}

/// Whether `path` is a finished output for these settings: it parses as safetensors, holds an f32
/// [`TENSOR`] of the right rank, layer count and width, and its settings metadata match.
pub fn is_valid_output(path: &Path, settings: &EmbedSettings, hidden: usize) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok((_, meta)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        return false;
    };
    let Ok(st) = safetensors::SafeTensors::deserialize(&bytes) else {
        return false;
    };
    let Ok(view) = st.tensor(TENSOR) else {
        return false;
    };
    let shape = view.shape();
    let rank = match settings.pool {
        super::Pool::None => 3,
        super::Pool::Mean => 2,
    };
    let want = metadata(
        settings,
        &Input {
            path: PathBuf::new(),
            rel: PathBuf::new(),
        },
    );
    let stored = meta.metadata().clone().unwrap_or_default();
    let settings_match = ["layers", "pool", "normalize", "chunk_samples"]
        .iter()
        .all(|k| stored.get(*k) == want.get(*k));
    view.dtype() == safetensors::Dtype::F32
        && shape.len() == rank
        && shape[0] == settings.layers.len()
        && shape[rank - 1] == hidden
        && settings_match
}

/// What an `--out-dir` run did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutDirSummary {
    /// Inputs listed.
    pub inputs: usize,
    /// Inputs skipped because their output was valid (`resume`).
    pub skipped: usize,
    /// Outputs written in this run.
    pub written: usize,
    /// Inputs that failed in this run (listed in `errors.tsv`).
    pub failed: usize,
    /// Audio seconds embedded and written in this run.
    pub audio_seconds: f64,
}

/// One line of `errors.tsv`: tabs and line breaks in the reason become spaces.
fn error_line(input: &Input, reason: &anyhow::Error) -> String {
    let clean = |s: String| s.replace(['\t', '\n', '\r'], " ");
    format!(
        "{}\t{}\n",
        clean(input.path.display().to_string()),
        clean(format!("{reason:#}"))
    )
}

/// Embeds `inputs` into `dir` (created if needed). `errors.tsv` is rewritten by each run and lists this
/// run's failures only. The progress bar (length set here) shows files/s and audio-seconds/s.
pub fn embed_to_dir(
    inputs: &[Input],
    dir: &Path,
    settings: &EmbedSettings,
    backend: &Backend,
    resume: bool,
    bar: &ProgressBar,
) -> Result<OutDirSummary> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let hidden = backend.config().hidden_size;
    let todo: Vec<Input> = inputs
        .iter()
        .filter(|i| !(resume && is_valid_output(&output_path(dir, i), settings, hidden)))
        .cloned()
        .collect();
    let skipped = inputs.len() - todo.len();
    let errors_path = dir.join(ERRORS_FILE);
    let mut errors = std::fs::File::create(&errors_path)
        .with_context(|| format!("creating {}", errors_path.display()))?;
    bar.set_length(todo.len() as u64);
    let start = Instant::now();
    let mut audio_seconds = 0.0;
    let mut written_count = 0;
    let corpus: CorpusStats = embed_corpus(&todo, settings, backend, |input, result| {
        let written = result.and_then(|e| {
            let out = output_path(dir, input);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let tensors = [(TENSOR.to_string(), e.tensor)];
            write_safetensors(&out, &tensors, Some(metadata(settings, input)))?;
            written_count += 1;
            Ok(e.audio_seconds)
        });
        if let Err(reason) = &written {
            errors
                .write_all(error_line(input, reason).as_bytes())
                .and_then(|_| errors.flush())
                .with_context(|| format!("writing {}", errors_path.display()))?;
        }
        audio_seconds += written.unwrap_or(0.0);
        bar.inc(1);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{:.2} files/s  {:.1} audio-s/s",
            bar.position() as f64 / secs,
            audio_seconds / secs
        ));
        Ok(())
    })?;
    Ok(OutDirSummary {
        inputs: inputs.len(),
        skipped,
        written: written_count,
        failed: corpus.embedded + corpus.failed - written_count,
        audio_seconds,
    })
}
