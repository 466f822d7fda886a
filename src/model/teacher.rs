//! Teachers: anything that turns 24 kHz audio into K streams of discrete codes at 75 Hz (EnCodec's RVQ,
//! the random-projection quantizer), and the label-file format that `tokenize --dataset` writes beside
//! each audio file for training.
//!
//! Label file (`song.wav` -> `song.tokens.safetensors`): one tensor `codes`, dtype U16, shape
//! [codebooks, frames] row-major, and metadata `teacher`, `codebook_size`, `hop`, `sample_rate`,
//! `params` (a string that identifies the teacher's settings exactly, e.g. its seed; a label file whose
//! `params` differ from the current teacher's is stale).

use crate::audio::wav::load_mono;
use crate::eval::similarity::write_histogram;
use crate::io::names::tensor_names;
use anyhow::{bail, ensure, Context, Result};
use indicatif::ProgressBar;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CODES_TENSOR: &str = "codes";

pub trait Teacher: Send + Sync {
    fn name(&self) -> &str;
    fn codebooks(&self) -> usize;
    fn codebook_size(&self) -> usize;
    /// 24000 for MERT's teachers.
    fn sample_rate(&self) -> u32;
    /// Samples per code frame (320 = 75 Hz at 24 kHz).
    fn hop(&self) -> usize;
    /// Codes [codebooks, frames] row-major, frames = ceil(len / hop) (as EnCodec).
    fn encode(&self, samples: &[f32]) -> Result<Vec<u16>>;
    /// A string that changes whenever the codes could change (settings, seed, version).
    fn params(&self) -> String;
    /// Metadata for the label files this teacher writes.
    fn label_meta(&self) -> LabelMeta {
        LabelMeta {
            teacher: self.name().to_string(),
            codebook_size: self.codebook_size(),
            hop: self.hop(),
            sample_rate: self.sample_rate(),
            params: self.params(),
        }
    }
}

/// What a label file records about the teacher that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMeta {
    pub teacher: String,
    pub codebook_size: usize,
    pub hop: usize,
    pub sample_rate: u32,
    pub params: String,
}

/// `dir/song.wav` -> `dir/song.tokens.safetensors`.
pub fn label_path(audio: &Path) -> PathBuf {
    audio.with_extension("tokens.safetensors")
}

/// Writes codes [codebooks, frames] (row-major) with the teacher's metadata; written to a temporary
/// file in the same directory and renamed, so a reader never sees a half-written file.
pub fn write_labels(
    path: &Path,
    codes: &[u16],
    codebooks: usize,
    frames: usize,
    meta: &LabelMeta,
) -> Result<()> {
    ensure!(
        codes.len() == codebooks * frames,
        "{}: {} codes for [{codebooks}, {frames}]",
        path.display(),
        codes.len()
    );
    if let Some(c) = codes.iter().find(|&&c| c as usize >= meta.codebook_size) {
        bail!(
            "{}: code {c} is outside the codebook of {} entries",
            path.display(),
            meta.codebook_size
        );
    }
    let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::U16, vec![codebooks, frames], &bytes)
        .map_err(|e| anyhow::anyhow!("{}: codes tensor: {e:?}", path.display()))?;
    let metadata = HashMap::from([
        ("teacher".to_string(), meta.teacher.clone()),
        ("codebook_size".to_string(), meta.codebook_size.to_string()),
        ("hop".to_string(), meta.hop.to_string()),
        ("sample_rate".to_string(), meta.sample_rate.to_string()),
        ("params".to_string(), meta.params.clone()),
    ]);
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    safetensors::serialize_to_file([(CODES_TENSOR, view)], Some(metadata), &tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

/// Reads a label file: (codes [K, T] row-major, K, T, metadata). Checks dtype, rank, metadata and that
/// every code is below `codebook_size`.
pub fn read_labels(path: &Path) -> Result<(Vec<u16>, usize, usize, LabelMeta)> {
    let name = path.display();
    let buf = std::fs::read(path).with_context(|| format!("reading label file {name}"))?;
    let st = SafeTensors::deserialize(&buf)
        .map_err(|e| anyhow::anyhow!("label file {name} is not a safetensors file: {e:?}"))?;
    let (_, header) = SafeTensors::read_metadata(&buf)
        .map_err(|e| anyhow::anyhow!("label file {name}: {e:?}"))?;
    let md = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        md.get(key)
            .cloned()
            .with_context(|| format!("label file {name} has no `{key}` metadata"))
    };
    let num = |key: &str| -> Result<usize> {
        let v = get(key)?;
        v.parse()
            .with_context(|| format!("label file {name}: `{key}` = {v:?} is not a number"))
    };
    let meta = LabelMeta {
        teacher: get("teacher")?,
        codebook_size: num("codebook_size")?,
        hop: num("hop")?,
        sample_rate: u32::try_from(num("sample_rate")?)
            .with_context(|| format!("label file {name}: sample_rate out of range"))?,
        params: get("params")?,
    };
    let t = st
        .tensor(CODES_TENSOR)
        .map_err(|_| anyhow::anyhow!("label file {name} has no tensor `{CODES_TENSOR}`"))?;
    ensure!(
        t.dtype() == Dtype::U16,
        "label file {name}: `{CODES_TENSOR}` has dtype {:?}, expected U16",
        t.dtype()
    );
    let &[k, frames] = t.shape() else {
        bail!(
            "label file {name}: `{CODES_TENSOR}` has shape {:?}, expected [codebooks, frames]",
            t.shape()
        );
    };
    let codes: Vec<u16> = t
        .data()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    if let Some(i) = codes.iter().position(|&c| c as usize >= meta.codebook_size) {
        bail!(
            "label file {name}: code {} at codebook {}, frame {} is not below codebook_size {}",
            codes[i],
            i / frames.max(1),
            i % frames.max(1),
            meta.codebook_size
        );
    }
    Ok((codes, k, frames, meta))
}

/// Audio files that `label_dataset` labels (by extension, case-insensitive).
pub const AUDIO_EXTENSIONS: [&str; 4] = ["wav", "flac", "mp3", "ogg"];
/// Per-dataset codeword histogram (src/eval/similarity.rs format), written at the dataset's root.
pub const HISTOGRAM_FILE: &str = "token_histogram.safetensors";

/// Loads `path` (mono, resampled to the teacher's rate) and encodes it: (codes [K, T], T).
pub fn encode_file(teacher: &dyn Teacher, path: &Path) -> Result<(Vec<u16>, usize)> {
    let audio = load_mono(path, teacher.sample_rate())
        .with_context(|| format!("reading {}", path.display()))?;
    let codes = teacher
        .encode(&audio)
        .with_context(|| format!("encoding {}", path.display()))?;
    let frames = codes.len() / teacher.codebooks();
    Ok((codes, frames))
}

/// Encodes `inputs` into one safetensors file: an I64 tensor [codebooks, frames] per input, named
/// after its file stem (duplicate stems are an error); metadata = the label metadata, `layout` and
/// `source.<name>` = the input path.
pub fn write_code_file(
    teacher: &dyn Teacher,
    inputs: &[PathBuf],
    out: &Path,
    bar: &ProgressBar,
) -> Result<()> {
    ensure!(!inputs.is_empty(), "no audio files given");
    let names = tensor_names(inputs)?;
    let k = teacher.codebooks();
    let meta = teacher.label_meta();
    let mut metadata = HashMap::from([
        ("teacher".to_string(), meta.teacher),
        ("codebook_size".to_string(), meta.codebook_size.to_string()),
        ("hop".to_string(), meta.hop.to_string()),
        ("sample_rate".to_string(), meta.sample_rate.to_string()),
        ("params".to_string(), meta.params),
        ("layout".to_string(), "[codebooks, frames]".to_string()),
    ]);
    let mut tensors: Vec<(String, usize, Vec<u8>)> = Vec::with_capacity(inputs.len());
    for (path, name) in inputs.iter().zip(&names) {
        bar.set_message(name.clone());
        let (codes, frames) = encode_file(teacher, path)?;
        let bytes = codes
            .iter()
            .flat_map(|&c| (c as i64).to_le_bytes())
            .collect();
        tensors.push((name.clone(), frames, bytes));
        metadata.insert(format!("source.{name}"), path.display().to_string());
        bar.inc(1);
    }
    let views = tensors
        .iter()
        .map(|(name, frames, bytes)| {
            let v = TensorView::new(Dtype::I64, vec![k, *frames], bytes)
                .map_err(|e| anyhow::anyhow!("tensor {name}: {e:?}"))?;
            Ok((name.clone(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, Some(metadata), out)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", out.display()))
}

/// Audio files under `dir` (recursive), sorted.
pub fn find_audio(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("listing directory {}", d.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing directory {}", d.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The label file's codes if it is at least as new as the audio and was made by this teacher.
fn up_to_date_labels(teacher: &dyn Teacher, audio: &Path, labels: &Path) -> Option<Vec<u16>> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(labels)? < modified(audio)? {
        return None;
    }
    let (codes, k, _, meta) = read_labels(labels).ok()?;
    (k == teacher.codebooks() && meta == teacher.label_meta()).then_some(codes)
}

/// What `label_dataset` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetSummary {
    /// The directory's name, recorded in the histogram.
    pub dataset: String,
    pub files: usize,
    /// Files whose label file was (re)written.
    pub encoded: usize,
    /// Files whose up-to-date label file was read instead.
    pub reused: usize,
    /// Code frames over all files.
    pub frames: usize,
    pub histogram: PathBuf,
}

/// Gives every audio file under `dir` its label file (`label_path`), recomputing only stale or missing
/// ones unless `force`, and writes `dir/token_histogram.safetensors` with the counts of every code of
/// every file, named after the directory.
pub fn label_dataset(
    teacher: &dyn Teacher,
    dir: &Path,
    force: bool,
    bar: &ProgressBar,
) -> Result<DatasetSummary> {
    ensure!(dir.is_dir(), "dataset {} is not a directory", dir.display());
    let files = find_audio(dir)?;
    ensure!(
        !files.is_empty(),
        "no audio files ({}) under {}",
        AUDIO_EXTENSIONS.join(", "),
        dir.display()
    );
    let (k, c) = (teacher.codebooks(), teacher.codebook_size());
    let meta = teacher.label_meta();
    let mut counts = vec![0i64; k * c];
    let (mut encoded, mut reused, mut total_frames) = (0, 0, 0);
    bar.set_length(files.len() as u64);
    for audio in &files {
        bar.set_message(audio.display().to_string());
        let labels = label_path(audio);
        let cached = if force {
            None
        } else {
            up_to_date_labels(teacher, audio, &labels)
        };
        let codes = match cached {
            Some(codes) => {
                reused += 1;
                codes
            }
            None => {
                let (codes, frames) = encode_file(teacher, audio)?;
                write_labels(&labels, &codes, k, frames, &meta)?;
                encoded += 1;
                codes
            }
        };
        let frames = codes.len() / k;
        total_frames += frames;
        for (row, hist) in codes
            .chunks_exact(frames.max(1))
            .zip(counts.chunks_exact_mut(c))
        {
            for &code in row {
                hist[code as usize] += 1;
            }
        }
        bar.inc(1);
    }
    ensure!(
        total_frames > 0,
        "{}: the audio files are too short to give a single frame",
        dir.display()
    );
    let dataset = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dataset".to_string());
    let histogram = dir.join(HISTOGRAM_FILE);
    write_histogram(&histogram, &dataset, k, c, &counts)
        .with_context(|| format!("writing {}", histogram.display()))?;
    Ok(DatasetSummary {
        dataset,
        files: files.len(),
        encoded,
        reused,
        frames: total_frames,
        histogram,
    })
}
