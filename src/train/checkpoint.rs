//! Checkpoints: `model/` (HF config.json + model.safetensors under the checkpoint's own parameter names),
//! `heads.safetensors`, `optimizer.safetensors` and `state.json`, written into a temporary directory and
//! renamed into place, then recorded in `latest`. Nothing partial is ever visible; the previous checkpoint
//! is removed only after the new one is complete.

use crate::io::safetensors::write_atomically;
use crate::model::mert::Mert;
use crate::train::objective::save_heads;
use crate::train::optim::AdamW;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// The next optimizer step to run (global, across stages).
    pub next_step: usize,
    /// Consecutive skipped (non-finite) steps when the checkpoint was taken.
    pub consecutive_skips: usize,
    pub seed: u64,
    /// The training config (TOML) the run was started with.
    pub config_toml: String,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Write a checkpoint for `state.next_step`; keep the newest `keep` checkpoints.
pub fn save_checkpoint(
    run_dir: &Path,
    model: &Mert,
    optimizer: &AdamW,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("step-{:08}", state.next_step);
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    model.save(&tmp.join("model"))?;
    save_heads(model, &tmp.join("heads.safetensors"))?;
    optimizer.save_state(&tmp.join("optimizer.safetensors"))?;
    write_atomically(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    write_atomically(&dir.join("latest"), name.as_bytes())?;
    // Prune older checkpoints (names sort by step).
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        })
        .collect();
    all.sort();
    while all.len() > keep.max(1) {
        let old = all.remove(0);
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing old checkpoint {}", old.display()))?;
    }
    Ok(final_dir)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let latest = checkpoints_dir(run_dir).join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest)
        .with_context(|| format!("reading {}", latest.display()))?;
    let dir = checkpoints_dir(run_dir).join(name.trim());
    if !dir.join("state.json").exists() {
        bail!(
            "{} names {}, which is incomplete or missing",
            latest.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}

pub fn read_state(checkpoint: &Path) -> Result<TrainState> {
    let p = checkpoint.join("state.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}
