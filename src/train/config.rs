//! Training recipes: TOML presets shipped with the crate (presets/*.toml), `--config FILE`, and
//! `--set key=value` overrides of any value (dotted path, array indices as numbers: `stages.0.steps=100`).

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::train::preset::PRESETS;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// "encodec" (labels from `tokenize` files) or "random-projection" (computed on the fly).
    pub teacher: String,
    pub codebooks: usize,
    pub codebook_size: usize,
    /// Rows per codebook in the codeword head (codebook_size, or +4 for a fairseq Dictionary).
    pub codewords: usize,
    pub codebook_weight: f32,
    pub feature_penalty_weight: f32,
    pub cqt_weight: f32,
    pub mask_prob: f32,
    pub mask_length: usize,
    pub mask_min_spans: usize,
    pub mixup_prob: f32,
    pub mixup_min_samples: usize,
    pub mixup_max_samples: usize,
    pub mixup_min_count: usize,
    pub mixup_max_count: usize,
    pub feature_grad_mult: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub crop_seconds: f32,
    pub segment_seconds: f32,
    pub min_seconds: f32,
}

/// A named dataset: a directory of audio (searched recursively) or a manifest file (one path per line,
/// relative to the manifest's directory).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    pub path: String,
    #[serde(default = "one")]
    pub weight: f32,
    /// Replay data (e.g. Western music) mixed in at each stage's `replay_fraction`.
    #[serde(default)]
    pub replay: bool,
}

fn one() -> f32 {
    1.0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub steps: usize,
    /// Warm-up as a fraction of the stage's steps, or `warmup_steps` absolute (one of the two).
    #[serde(default)]
    pub warmup_fraction: Option<f32>,
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    pub lr_max: f32,
    pub lr_min: f32,
    pub betas: [f32; 2],
    pub eps: f32,
    pub weight_decay: f32,
    /// Clips per optimizer step (= micro-batch x grad_accumulation).
    pub batch_clips: usize,
    pub grad_accumulation: usize,
    pub clip_norm: f32,
    /// Parameter-name patterns that train in this stage (prefixes, or globs with `*`); everything else is frozen.
    pub trainable: Vec<String>,
    pub replay_fraction: f32,
    /// Datasets (by name) this stage draws from; empty = every non-replay dataset.
    #[serde(default)]
    pub datasets: Vec<String>,
}

impl Stage {
    pub fn warmup(&self) -> usize {
        match (self.warmup_steps, self.warmup_fraction) {
            (Some(s), _) => s,
            (None, Some(f)) => (f * self.steps as f32).round() as usize,
            (None, None) => 0,
        }
    }

    pub fn micro_batch(&self) -> usize {
        self.batch_clips / self.grad_accumulation
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// "cosine" (warm-up then cosine to lr_min, re-warmed per stage) or "polynomial" (fairseq, power 1).
    pub schedule: String,
    pub seed: u64,
    pub objective: Objective,
    pub data: DataConfig,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub datasets: Vec<DatasetSpec>,
    /// A model config.json (path) for from-scratch runs, or "embedded:tiny" for the demo's tiny model.
    #[serde(default)]
    pub model_config: Option<String>,
}

impl TrainConfig {
    /// Parse TOML text, apply `key=value` overrides, validate.
    pub fn from_toml(text: &str, overrides: &[String], origin: &str) -> Result<Self> {
        Self::from_toml_in(text, overrides, origin, None)
    }

    /// [`Self::from_toml`] for text read from a file in `dir` (an `extends` path is relative to it).
    fn from_toml_in(
        text: &str,
        overrides: &[String],
        origin: &str,
        dir: Option<&Path>,
    ) -> Result<Self> {
        let mut value = crate::train::preset::parse_with_extends(text, origin, dir)?;
        for o in overrides {
            apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
        }
        let cfg: TrainConfig = value
            .try_into()
            .with_context(|| format!("{origin}: not a valid training config"))?;
        cfg.validate().with_context(|| format!("in {origin}"))?;
        Ok(cfg)
    }

    pub fn preset(name: &str, overrides: &[String]) -> Result<Self> {
        let text = crate::train::preset::preset_text(name)?;
        Self::from_toml(text, overrides, &format!("preset {name}"))
    }

    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let origin = path.display().to_string();
        Self::from_toml_in(&text, overrides, &origin, path.parent())
    }

    /// (stage index, first global step of that stage) for global `step`; past the end, the last stage.
    pub fn locate(&self, step: usize) -> (usize, usize) {
        let mut start = 0;
        for (i, s) in self.stages.iter().enumerate() {
            if step < start + s.steps {
                return (i, start);
            }
            start += s.steps;
        }
        let last = self.stages.last().map_or(0, |s| s.steps);
        (self.stages.len().saturating_sub(1), start - last)
    }

    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            matches!(self.schedule.as_str(), "cosine" | "polynomial"),
            "schedule must be \"cosine\" or \"polynomial\", got {:?}",
            self.schedule
        );
        let o = &self.objective;
        ensure!(
            matches!(o.teacher.as_str(), "encodec" | "random-projection"),
            "objective.teacher must be \"encodec\" or \"random-projection\", got {:?}",
            o.teacher
        );
        ensure!(
            o.codebooks > 0 && o.codebook_size > 0 && o.codewords >= o.codebook_size,
            "objective: codebooks/codebook_size/codewords inconsistent"
        );
        ensure!(
            (0.0..1.0).contains(&o.mask_prob) && o.mask_length > 0,
            "objective: mask_prob must be in [0,1) and mask_length > 0"
        );
        ensure!(
            (0.0..=1.0).contains(&o.mixup_prob),
            "objective.mixup_prob must be in [0, 1]"
        );
        ensure!(
            o.mixup_min_samples <= o.mixup_max_samples && o.mixup_min_count <= o.mixup_max_count,
            "objective: mixup ranges are reversed"
        );
        ensure!(
            self.data.crop_seconds > 0.0 && self.data.segment_seconds >= self.data.crop_seconds,
            "data: need 0 < crop_seconds <= segment_seconds"
        );
        ensure!(!self.stages.is_empty(), "no [[stages]]");
        for s in &self.stages {
            let n = &s.name;
            ensure!(s.steps > 0, "stage {n}: steps must be positive");
            ensure!(
                s.warmup() <= s.steps,
                "stage {n}: warm-up longer than the stage"
            );
            ensure!(
                s.lr_max >= s.lr_min && s.lr_min >= 0.0,
                "stage {n}: need lr_max >= lr_min >= 0"
            );
            ensure!(
                s.betas.iter().all(|b| (0.0..1.0).contains(b)) && s.eps > 0.0,
                "stage {n}: betas in [0,1), eps > 0"
            );
            ensure!(
                s.grad_accumulation > 0
                    && s.batch_clips > 0
                    && s.batch_clips.is_multiple_of(s.grad_accumulation),
                "stage {n}: batch_clips ({}) must be a positive multiple of grad_accumulation ({})",
                s.batch_clips,
                s.grad_accumulation
            );
            ensure!(s.clip_norm > 0.0, "stage {n}: clip_norm must be positive");
            ensure!(
                (0.0..1.0).contains(&s.replay_fraction),
                "stage {n}: replay_fraction must be in [0, 1)"
            );
            ensure!(!s.trainable.is_empty(), "stage {n}: no trainable patterns");
        }
        Ok(())
    }
}

/// Set a dotted path in a TOML tree; the value is parsed as TOML (number, bool, array, string) or taken as
/// a bare string.
pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment.split_once('=').context("expected key=value")?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let mut node = root;
    for (i, key) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        node = match node {
            toml::Value::Table(t) => {
                if last {
                    ensure!(t.contains_key(*key) || !t.is_empty(), "no key {key}");
                    t.insert(key.to_string(), value);
                    return Ok(());
                }
                t.get_mut(*key)
                    .with_context(|| format!("no key {key:?} in {path}"))?
            }
            toml::Value::Array(a) => {
                let idx: usize = key
                    .parse()
                    .with_context(|| format!("{key:?} is not an array index in {path}"))?;
                let len = a.len();
                let slot = a.get_mut(idx).with_context(|| {
                    format!("index {idx} out of range ({len} entries) in {path}")
                })?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("{path}: {key:?} is not inside a table or array"),
        };
    }
    Ok(())
}
