//! Probing datasets: the tag table (CSV/TSV with columns file, split, tags) and the frozen, time-mean-pooled
//! MERT embeddings of every clip (all hidden states, per chunk), with an optional safetensors cache.

use crate::embed::{embed_samples_on, zero_mean_unit_var, Backend, Pool};
use crate::model::weights::{read_safetensors, write_safetensors};
use crate::tensor::{CpuData, Tensor};
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub fn parse(s: &str) -> Option<Split> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "valid" | "val" | "validation" => Some(Split::Valid),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// One row of the tag table.
#[derive(Clone, Debug)]
pub struct Clip {
    /// The `file` column as written (relative to the audio directory unless absolute).
    pub file: String,
    pub path: PathBuf,
    pub split: Split,
    pub tags: Vec<String>,
}

/// The parsed table and its label vocabulary (every tag present, sorted).
#[derive(Clone, Debug)]
pub struct TagTable {
    pub clips: Vec<Clip>,
    pub vocab: Vec<String>,
}

impl TagTable {
    /// Multi-hot targets [clips, vocab] (0/1).
    pub fn label_matrix(&self) -> Vec<f32> {
        let index: HashMap<&str, usize> = self
            .vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let n = self.vocab.len();
        let mut y = vec![0.0f32; self.clips.len() * n];
        for (row, clip) in y.chunks_exact_mut(n).zip(&self.clips) {
            for t in &clip.tags {
                row[index[t.as_str()]] = 1.0;
            }
        }
        y
    }
}

/// Splits one delimited record; fields may be double-quoted ("" is a literal quote).
fn split_record(line: &str, delim: char) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut quoted_field = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.is_empty() && !quoted_field {
            in_quotes = true;
            quoted_field = true;
        } else if c == delim {
            fields.push(std::mem::take(&mut cur));
            quoted_field = false;
        } else {
            ensure!(!quoted_field, "text after a closing quote");
            cur.push(c);
        }
    }
    ensure!(
        !in_quotes,
        "unterminated quoted field (fields spanning lines are not supported)"
    );
    fields.push(cur);
    Ok(fields)
}

/// Delimiter from the extension (.tsv/.tab = tab, .csv = comma), else from the header line.
fn delimiter_for(path: &Path, header: &str) -> char {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("tsv") | Some("tab") => '\t',
        Some("csv") => ',',
        _ if header.contains('\t') => '\t',
        _ => ',',
    }
}

/// Parses a tag table. `source` names it in errors; file paths resolve against `audio_dir`; with
/// `check_files` every file must exist.
pub fn parse_tag_table(
    text: &str,
    source: &str,
    delim: char,
    audio_dir: &Path,
    check_files: bool,
) -> Result<TagTable> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .with_context(|| format!("{source}: empty tag table"))?;
    let header = header.trim_start_matches('\u{feff}').trim_end_matches('\r');
    let names: Vec<String> = split_record(header, delim)
        .with_context(|| format!("{source} line 1 (header)"))?
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let col = |want: &str| {
        names.iter().position(|n| n == want).with_context(|| {
            format!("{source} line 1: no column {want:?} in header {names:?} (need file, split, tags; delimiter {delim:?})")
        })
    };
    let (c_file, c_split, c_tags) = (col("file")?, col("split")?, col("tags")?);
    let mut clips = Vec::new();
    let mut seen = HashSet::new();
    let mut vocab = BTreeSet::new();
    for (i, line) in lines {
        let lineno = i + 1;
        let at = || format!("{source} line {lineno}");
        let fields = split_record(line.trim_end_matches('\r'), delim).with_context(at)?;
        ensure!(
            fields.len() == names.len(),
            "{}: {} fields, but the header has {} (delimiter {delim:?})",
            at(),
            fields.len(),
            names.len()
        );
        let file = fields[c_file].trim().to_string();
        ensure!(!file.is_empty(), "{}: empty file name", at());
        let split_text = fields[c_split].trim();
        let split = Split::parse(split_text).with_context(|| {
            format!(
                "{}: unknown split {split_text:?} (expected train, valid or test)",
                at()
            )
        })?;
        let tags: Vec<String> = fields[c_tags]
            .split(';')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let path = audio_dir.join(&file);
        if check_files {
            ensure!(
                path.is_file(),
                "{}: audio file {} does not exist",
                at(),
                path.display()
            );
        }
        ensure!(
            seen.insert(file.clone()),
            "{}: file {file:?} is listed twice",
            at()
        );
        vocab.extend(tags.iter().cloned());
        clips.push(Clip {
            file,
            path,
            split,
            tags,
        });
    }
    ensure!(!clips.is_empty(), "{source}: no data rows");
    ensure!(!vocab.is_empty(), "{source}: no tags in any row");
    for s in [Split::Train, Split::Valid, Split::Test] {
        ensure!(
            clips.iter().any(|c| c.split == s),
            "{source}: no clip in split {}",
            s.name()
        );
    }
    Ok(TagTable {
        clips,
        vocab: vocab.into_iter().collect(),
    })
}

/// Reads a CSV/TSV tag table from disk (see `parse_tag_table`).
pub fn read_tag_table(path: &Path, audio_dir: &Path) -> Result<TagTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tag table {}", path.display()))?;
    let delim = delimiter_for(path, text.lines().next().unwrap_or(""));
    parse_tag_table(&text, &path.display().to_string(), delim, audio_dir, true)
}

/// Pooled embeddings of every clip: `per_clip[c]` is [chunks, states, hidden], states = num_layers + 1.
#[derive(Clone, Debug)]
pub struct ClipEmbeddings {
    pub states: usize,
    pub hidden: usize,
    pub per_clip: Vec<Vec<f32>>,
}

impl ClipEmbeddings {
    pub fn chunks(&self, clip: usize) -> usize {
        self.per_clip[clip].len() / (self.states * self.hidden)
    }
}

/// One clip: per-clip zero-mean/unit-variance normalisation, then `chunk`-sample pieces (a trailing piece
/// too short for one frame is dropped), each run through the model (on the CPU or a CUDA device) and
/// mean-pooled over time.
pub fn embed_clip(model: &Backend, mut samples: Vec<f32>, chunk: usize) -> Result<Vec<f32>> {
    let min = model.config().min_samples();
    ensure!(
        samples.len() >= min,
        "{} samples, fewer than the {min} the model needs for one frame",
        samples.len()
    );
    ensure!(
        chunk >= min,
        "chunk of {chunk} samples is shorter than the {min} needed for one frame"
    );
    zero_mean_unit_var(&mut samples);
    let states: Vec<usize> = (0..=model.config().num_hidden_layers).collect();
    let mut out = Vec::new();
    for piece in samples.chunks(chunk).filter(|p| p.len() >= min) {
        out.extend_from_slice(embed_samples_on(model, piece, &states, Pool::Mean, None)?.data());
    }
    Ok(out)
}

/// What a cache file must agree with to be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    pub model: String,
    pub chunk_samples: usize,
    pub states: usize,
    pub hidden: usize,
}

impl CacheKey {
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                "format".into(),
                "culturemert-raw probe embeddings v1".into(),
            ),
            ("model".into(), self.model.clone()),
            ("chunk_samples".into(), self.chunk_samples.to_string()),
            ("states".into(), self.states.to_string()),
            ("hidden".into(), self.hidden.to_string()),
            ("normalize".into(), "per-clip zero-mean unit-var".into()),
        ])
    }
}

/// Writes the embeddings, one [chunks, states, hidden] tensor per clip named by its `file` column.
pub fn save_cache(
    path: &Path,
    table: &TagTable,
    emb: &ClipEmbeddings,
    key: &CacheKey,
) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = table
        .clips
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.file.clone(),
                Tensor::from_f32(
                    &[emb.chunks(i), emb.states, emb.hidden],
                    emb.per_clip[i].clone(),
                ),
            )
        })
        .collect();
    write_safetensors(path, &tensors, Some(key.metadata()))
        .with_context(|| format!("writing embedding cache {}", path.display()))
}

/// Reads a cache written by `save_cache`; errors (suggesting deletion) if it was made differently or
/// lacks a clip.
pub fn load_cache(path: &Path, table: &TagTable, key: &CacheKey) -> Result<ClipEmbeddings> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading embedding cache {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let stored = meta.metadata().clone().unwrap_or_default();
    for (k, want) in key.metadata() {
        let got = stored.get(&k).map(String::as_str).unwrap_or("<missing>");
        ensure!(
            got == want,
            "embedding cache {}: {k} is {got:?} but this run needs {want:?}; delete the file to recompute",
            path.display()
        );
    }
    let mut raw = read_safetensors(path)?;
    let mut per_clip = Vec::with_capacity(table.clips.len());
    for c in &table.clips {
        let (shape, data) = raw.remove(&c.file).with_context(|| {
            format!(
                "embedding cache {} has no entry for {:?}; delete the file to recompute",
                path.display(),
                c.file
            )
        })?;
        let CpuData::F32(v) = data else {
            bail!(
                "embedding cache {}: {:?} is not f32",
                path.display(),
                c.file
            )
        };
        ensure!(
            shape.len() == 3 && shape[0] > 0 && shape[1] == key.states && shape[2] == key.hidden,
            "embedding cache {}: {:?} has shape {shape:?}, expected [chunks, {}, {}]",
            path.display(),
            c.file,
            key.states,
            key.hidden
        );
        per_clip.push(v);
    }
    Ok(ClipEmbeddings {
        states: key.states,
        hidden: key.hidden,
        per_clip,
    })
}
