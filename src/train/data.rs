//! Training data: named datasets (directories of audio, manifests, or the embedded synthetic corpus), 30 s
//! segments and hop-aligned random crops, a replay fraction per stage, and the targets of each crop
//! (teacher codes from `tokenize` label files or computed on the fly, the CQT of the clean crop).
//!
//! Every draw is a pure function of (seed, global step, micro-batch): resuming at a step needs no cursor
//! or RNG state beyond the step itself, so a resumed run sees exactly the batches of an uninterrupted one.

use crate::audio::cqt::CqtPlan;
use crate::model::teacher::{label_path, read_labels, Teacher};
use crate::train::config::{DataConfig, DatasetSpec, Stage};
use crate::train::masking::MaskRng;
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "flac", "mp3", "ogg", "oga"];

enum Source {
    /// Clips held in memory (the embedded synthetic corpus).
    Memory(Vec<Arc<Vec<f32>>>),
    Files(Vec<PathBuf>),
}

/// A clip's mono samples at their own rate: decoded, or a WAV file read a crop at a time.
#[derive(Clone)]
enum ClipSamples {
    Decoded(Arc<Vec<f32>>),
    /// Only the header has been read: a crop reads just the frames it needs (`read_wav_mono_range`).
    Wav(PathBuf),
}

#[derive(Clone)]
struct Clip {
    samples: ClipSamples,
    frames: usize,
    rate: u32,
}

impl Clip {
    fn decoded(samples: Arc<Vec<f32>>, rate: u32) -> Clip {
        Clip {
            frames: samples.len(),
            samples: ClipSamples::Decoded(samples),
            rate,
        }
    }

    /// Length after resampling to `rate`.
    fn len_at(&self, rate: u32) -> usize {
        crate::audio::resample::resampled_len(self.frames, self.rate, rate)
    }
}

pub struct Dataset {
    pub spec: DatasetSpec,
    source: Source,
}

impl Dataset {
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Memory(c) => c.len(),
            Source::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn from_memory(spec: DatasetSpec, clips: Vec<Vec<f32>>) -> Result<Self> {
        ensure!(!clips.is_empty(), "dataset {} has no clips", spec.name);
        Ok(Dataset {
            spec,
            source: Source::Memory(clips.into_iter().map(Arc::new).collect()),
        })
    }

    /// A directory (searched recursively for audio) or a manifest file (one path per line, relative paths
    /// resolved against the manifest's directory; `#` comments).
    pub fn from_path(spec: DatasetSpec) -> Result<Self> {
        let path = PathBuf::from(&spec.path);
        let mut files = Vec::new();
        if path.is_dir() {
            collect_audio(&path, &mut files)?;
        } else if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading manifest {}", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let p = Path::new(line.split('\t').next().unwrap_or(line));
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                ensure!(
                    p.is_file(),
                    "manifest {}: {} does not exist",
                    path.display(),
                    p.display()
                );
                files.push(p);
            }
        } else {
            bail!(
                "dataset {}: {} is neither a directory nor a manifest file",
                spec.name,
                path.display()
            );
        }
        files.sort();
        ensure!(
            !files.is_empty(),
            "dataset {}: no audio files in {}",
            spec.name,
            path.display()
        );
        Ok(Dataset {
            spec,
            source: Source::Files(files),
        })
    }
}

fn collect_audio(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = entry?.path();
        if p.is_dir() {
            collect_audio(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// One micro-batch of clean crops and their targets.
pub struct Crops {
    /// [B, L] clean audio.
    pub audio: Vec<f32>,
    pub batch: usize,
    pub len: usize,
    /// [B, K, frames] codes.
    pub codes: Vec<i32>,
    pub code_frames: usize,
    /// [B, cqt_frames, bins] CQT magnitudes of the clean crops.
    pub cqt: Vec<f32>,
    pub cqt_frames: usize,
    /// Dataset name of each crop.
    pub sources: Vec<String>,
}

pub struct DataPipeline {
    datasets: Vec<Dataset>,
    data: DataConfig,
    rate: u32,
    hop: usize,
    teacher: Arc<dyn Teacher>,
    cqt: &'static CqtPlan,
    seed: u64,
    /// Decoded files at their own rate (bounded), so a file drawn again is not decoded again.
    cache: Mutex<HashMap<PathBuf, Clip>>,
    cache_files: usize,
}

/// Decoded files kept by default.
const CACHE_FILES: usize = 64;

impl DataPipeline {
    pub fn new(
        datasets: Vec<Dataset>,
        data: DataConfig,
        teacher: Arc<dyn Teacher>,
        seed: u64,
    ) -> Result<Self> {
        ensure!(!datasets.is_empty(), "no datasets");
        let hop = teacher.hop();
        Ok(DataPipeline {
            datasets,
            data,
            rate: teacher.sample_rate(),
            hop,
            teacher,
            cqt: CqtPlan::mert_shared(),
            seed,
            cache: Mutex::new(HashMap::new()),
            cache_files: CACHE_FILES,
        })
    }

    /// Keep at most `n` decoded files (0: decode every draw, as `bench --data` measures).
    pub fn with_cache_files(mut self, n: usize) -> Self {
        self.cache_files = n;
        self
    }

    /// Sample rate of the crops (the teacher's).
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    pub fn datasets(&self) -> &[Dataset] {
        &self.datasets
    }

    /// Indices of the datasets a stage draws from: (main, replay).
    fn stage_sources(&self, stage: &Stage) -> Result<(Vec<usize>, Vec<usize>)> {
        let main: Vec<usize> = self
            .datasets
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                if stage.datasets.is_empty() {
                    !d.spec.replay
                } else {
                    stage.datasets.contains(&d.spec.name)
                }
            })
            .map(|(i, _)| i)
            .collect();
        for name in &stage.datasets {
            ensure!(
                self.datasets.iter().any(|d| &d.spec.name == name),
                "stage {}: unknown dataset {name:?}",
                stage.name
            );
        }
        let replay: Vec<usize> = self
            .datasets
            .iter()
            .enumerate()
            .filter(|(_, d)| d.spec.replay)
            .map(|(i, _)| i)
            .collect();
        ensure!(
            !main.is_empty(),
            "stage {}: no datasets to draw from",
            stage.name
        );
        ensure!(
            stage.replay_fraction == 0.0 || !replay.is_empty(),
            "stage {}: replay_fraction > 0 but no replay dataset",
            stage.name
        );
        Ok((main, replay))
    }

    /// A clip, decoded (mono) but not resampled: only the crop is.
    fn load(&self, ds: &Dataset, index: usize) -> Result<(Clip, Option<PathBuf>)> {
        match &ds.source {
            Source::Memory(clips) => Ok((Clip::decoded(clips[index].clone(), self.rate), None)),
            Source::Files(files) => {
                let path = &files[index];
                if let Some(a) = self.cache.lock().unwrap().get(path) {
                    return Ok((a.clone(), Some(path.clone())));
                }
                let header = crate::audio::wav::wav_frames(path)
                    .with_context(|| format!("dataset {}", ds.spec.name))?;
                if let Some((frames, rate)) = header {
                    ensure!(
                        frames > 0 && rate > 0,
                        "dataset {}: WAV file {} has {frames} frames at {rate} Hz",
                        ds.spec.name,
                        path.display()
                    );
                    let samples = ClipSamples::Wav(path.clone());
                    return Ok((
                        Clip {
                            samples,
                            frames,
                            rate,
                        },
                        Some(path.clone()),
                    ));
                }
                let (samples, rate) = crate::audio::wav::load_mono_native(path)
                    .with_context(|| format!("dataset {}", ds.spec.name))?;
                let clip = Clip::decoded(Arc::new(samples), rate);
                let mut cache = self.cache.lock().unwrap();
                if cache.len() >= self.cache_files {
                    cache.clear();
                }
                if self.cache_files > 0 {
                    cache.insert(path.clone(), clip.clone());
                }
                Ok((clip, Some(path.clone())))
            }
        }
    }

    /// Samples `start..start + len` of `clip` at the pipeline's rate: a slice, or the resampled crop
    /// (bit-identical to that slice of the whole resampled file).
    fn crop(&self, clip: &Clip, start: usize, len: usize, path: Option<&Path>) -> Result<Vec<f32>> {
        use crate::audio::resample::{input_window, resample_range, resample_window};
        match &clip.samples {
            ClipSamples::Decoded(x) => resample_range(x, clip.rate, self.rate, start, len),
            ClipSamples::Wav(file) => {
                let (lo, hi) = input_window(clip.frames, clip.rate, self.rate, start, len);
                let window = crate::audio::wav::read_wav_mono_range(file, lo, hi - lo)?;
                resample_window(&window, lo, clip.frames, clip.rate, self.rate, start, len)
            }
        }
        .with_context(|| match path {
            Some(p) => format!("resampling {} from {} Hz", p.display(), clip.rate),
            None => "resampling an in-memory clip".to_string(),
        })
    }

    /// The micro-batch `micro` of optimizer step `step` (global), `size` crops, with their CQT.
    pub fn batch(&self, stage: &Stage, step: usize, micro: usize, size: usize) -> Result<Crops> {
        self.crops(stage, step, micro, size, true)
    }

    /// As [`Self::batch`]; without `with_cqt` the CQT is left out (`cqt` empty, `cqt_frames` 0) for the
    /// device to compute from the clean audio.
    pub fn crops(
        &self,
        stage: &Stage,
        step: usize,
        micro: usize,
        size: usize,
        with_cqt: bool,
    ) -> Result<Crops> {
        let (main, replay) = self.stage_sources(stage)?;
        let mut rng = MaskRng::new(draw_seed(self.seed, step, micro, 0xDA7A));
        let crop_max = ((self.data.crop_seconds * self.rate as f32) as usize / self.hop) * self.hop;
        let segment =
            ((self.data.segment_seconds * self.rate as f32) as usize / self.hop) * self.hop;
        let mut picks = Vec::with_capacity(size);
        for _ in 0..size {
            let pool = if !replay.is_empty() && (rng.uniform() as f32) < stage.replay_fraction {
                &replay
            } else {
                &main
            };
            let total: f32 = pool.iter().map(|&i| self.datasets[i].spec.weight).sum();
            let mut r = rng.uniform() as f32 * total;
            let mut chosen = pool[pool.len() - 1];
            for &i in pool {
                r -= self.datasets[i].spec.weight;
                if r < 0.0 {
                    chosen = i;
                    break;
                }
            }
            let ds = &self.datasets[chosen];
            let index = rng.below(ds.len());
            let (audio, path) = self.load(ds, index)?;
            picks.push((chosen, audio, path, rng.next_u64()));
        }
        // MERT crops the whole batch to its shortest clip.
        let min_len = picks
            .iter()
            .map(|p| p.1.len_at(self.rate))
            .min()
            .unwrap_or(0);
        let len = (crop_max.min(min_len) / self.hop) * self.hop;
        ensure!(
            len >= self.hop * 2,
            "clips too short to crop ({min_len} samples)"
        );
        let k = self.teacher.codebooks();
        let frames = len / self.hop;
        let mut out = Crops {
            audio: Vec::with_capacity(size * len),
            batch: size,
            len,
            codes: Vec::new(),
            code_frames: frames,
            cqt: Vec::new(),
            cqt_frames: 0,
            sources: Vec::new(),
        };
        for (ds_index, clip, path, r) in picks {
            let mut crng = MaskRng::new(r);
            let clip_len = clip.len_at(self.rate);
            // A random 30 s segment (hop-aligned), then a random crop inside it.
            let segments = (clip_len.saturating_sub(len)) / segment.max(1) + 1;
            let seg_start = crng.below(segments) * segment;
            let seg_end = (seg_start + segment).min(clip_len);
            let room = (seg_end.max(seg_start + len).min(clip_len) - seg_start - len) / self.hop;
            let start = seg_start + crng.below(room + 1) * self.hop;
            let crop = self.crop(&clip, start, len, path.as_deref())?;
            let crop = crop.as_slice();
            out.audio.extend_from_slice(crop);
            let codes = self.codes_for(path.as_deref(), crop, start, frames)?;
            out.codes.extend(codes.iter().map(|&c| c as i32));
            if with_cqt {
                let (cqt_frames, cqt) = self.cqt.forward(crop);
                out.cqt_frames = cqt_frames;
                out.cqt.extend_from_slice(&cqt);
            }
            out.sources.push(self.datasets[ds_index].spec.name.clone());
        }
        debug_assert_eq!(out.codes.len(), size * k * frames);
        Ok(out)
    }

    /// Codes [K, frames] of a crop: from the file's label file when it exists (written by `tokenize`, on the
    /// whole track as MERT does), else by running the teacher on the crop.
    fn codes_for(
        &self,
        path: Option<&Path>,
        crop: &[f32],
        start: usize,
        frames: usize,
    ) -> Result<Vec<u16>> {
        let k = self.teacher.codebooks();
        if let Some(p) = path {
            let lp = label_path(p);
            if lp.exists() {
                let (codes, kk, total, meta) = read_labels(&lp)?;
                ensure!(
                    meta.teacher == self.teacher.name()
                        && meta.codebook_size == self.teacher.codebook_size(),
                    "{}: labels of teacher {} with {} codes, the run uses {} with {}",
                    lp.display(),
                    meta.teacher,
                    meta.codebook_size,
                    self.teacher.name(),
                    self.teacher.codebook_size()
                );
                ensure!(
                    kk == k,
                    "{}: {kk} codebooks, the run expects {k}",
                    lp.display()
                );
                let first = start / self.hop;
                ensure!(
                    first + frames <= total,
                    "{}: {total} label frames, crop needs {}..{}",
                    lp.display(),
                    first,
                    first + frames
                );
                return Ok((0..k)
                    .flat_map(|q| {
                        codes[q * total + first..q * total + first + frames]
                            .iter()
                            .copied()
                    })
                    .collect());
            }
        }
        let codes = self.teacher.encode(crop).with_context(|| match path {
            Some(p) => format!("teacher codes for {}", p.display()),
            None => "teacher codes for an in-memory clip".to_string(),
        })?;
        let total = codes.len() / k;
        ensure!(total >= frames, "teacher gave {total} frames for {frames}");
        Ok((0..k)
            .flat_map(|q| codes[q * total..q * total + frames].iter().copied())
            .collect())
    }
}

/// A seed for one draw, mixing the run seed, the step, the micro-batch and a purpose tag (splitmix64).
pub fn draw_seed(seed: u64, step: usize, micro: usize, tag: u64) -> u64 {
    let mut z = seed
        ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (micro as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ tag.rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
