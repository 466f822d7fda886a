//! Task arithmetic on HF checkpoints: theta = theta_pre + sum_i lambda_i (theta_i - theta_pre).
//!
//! Works tensor by tensor in the checkpoint's own parameter names, so weight-norm `g` and `v` are merged
//! as stored (not the reconstructed weight). Inputs are memory-mapped and every tensor is processed in
//! chunks of `CHUNK` elements, so the heap use is a few MB whatever the model size; the output is
//! streamed to a temporary file.
//!
//! Output layout: the merged file keeps the base file's header order and byte offsets (same names,
//! dtypes, shapes), with the base's `__metadata__` plus a `culturemert_merge` entry recording the
//! models and lambdas. Float tensors (F32, F16, BF16, F64) are computed in f64 and rounded once to the
//! stored dtype; integer and bool tensors must be byte-identical in every model and are copied.
//!
//! Inputs may be `pytorch_model.bin` (torch.save) checkpoints: they are converted to safetensors in the
//! output's temporary directory first (src/merge/sources.rs), their tensors renamed to the base's
//! weight-norm spelling where the two differ.
//!
//! A merge writes into a sibling temporary directory and renames it to the output at the end, so a
//! failure leaves nothing behind.

use anyhow::{bail, ensure, Context, Result};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensors;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

mod sources;
pub use sources::{locate, tensor_names, Weights};

/// Elements processed per step of one tensor (bounds the f64 accumulator to 512 KiB).
const CHUNK: usize = 1 << 16;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Turn the CLI choice (one shared lambda, one lambda per model, or weight averaging) into one
/// lambda per model. Exactly one of the three must be given.
pub fn resolve_lambdas(
    n_models: usize,
    lambda: Option<f64>,
    lambdas: Option<&[f64]>,
    average: bool,
) -> Result<Vec<f64>> {
    ensure!(n_models > 0, "merge needs at least one --model");
    let given = lambda.is_some() as usize + lambdas.is_some() as usize + average as usize;
    ensure!(
        given == 1,
        "give exactly one of --lambda X, --lambdas a,b,.. or --average (got {given})"
    );
    let out = match (lambda, lambdas) {
        (Some(l), _) => vec![l; n_models],
        (_, Some(ls)) => {
            ensure!(
                ls.len() == n_models,
                "--lambdas has {} values but {} --model directories were given",
                ls.len(),
                n_models
            );
            ls.to_vec()
        }
        _ => vec![1.0 / n_models as f64; n_models],
    };
    if let Some(bad) = out.iter().find(|l| !l.is_finite()) {
        bail!("lambda {bad} is not finite");
    }
    Ok(out)
}

/// What a merge did, for the CLI summary.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub tensors: usize,
    pub float_elements: usize,
    pub copied_integer_tensors: usize,
}

/// Merge HF checkpoints into a new directory `out`, which must not exist or be an empty directory.
/// Each input is a directory (config.json + model.safetensors or pytorch_model.bin) or a weights file
/// with config.json beside it; the output is safetensors under the base's tensor names. `out` gets the base's config.json and, if present, its
/// preprocessor_config.json.
pub fn merge_dirs(
    base: &Path,
    models: &[PathBuf],
    lambdas: &[f64],
    out: &Path,
) -> Result<MergeSummary> {
    ensure!(
        models.len() == lambdas.len(),
        "{} models but {} lambdas",
        models.len(),
        lambdas.len()
    );
    ensure!(!models.is_empty(), "merge needs at least one model");
    check_out_dir(out)?;
    let base_cfg = read_config(base)?;
    for m in models {
        let cfg = read_config(m)?;
        compare_configs(&base_cfg, &cfg).with_context(|| {
            format!(
                "config of {} differs from the base {}",
                m.display(),
                base.display()
            )
        })?;
    }
    let base_weights = locate(base)?;
    let model_weights: Vec<Weights> = models.iter().map(|m| locate(m)).collect::<Result<_>>()?;

    let tmp = temp_sibling(out)?;
    let result = (|| -> Result<MergeSummary> {
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // .bin inputs (and safetensors spelled differently from the base) become safetensors here.
        let converted = tmp.join(".inputs");
        let base_file = base_weights.as_safetensors(None, &converted.join("base.safetensors"))?;
        let names = tensor_names(&base_file)?;
        let model_files: Vec<PathBuf> = model_weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                w.as_safetensors(
                    Some(&names),
                    &converted.join(format!("model{i}.safetensors")),
                )
            })
            .collect::<Result<_>>()?;
        let labels: Vec<PathBuf> = model_weights
            .iter()
            .map(|w| w.path().to_path_buf())
            .collect();
        let summary = merge_files_as(
            &base_file,
            &model_files,
            lambdas,
            &tmp.join(WEIGHTS_FILE),
            (base_weights.path(), &labels),
        )?;
        if converted.exists() {
            std::fs::remove_dir_all(&converted)
                .with_context(|| format!("removing {}", converted.display()))?;
        }
        let config_dir = base_weights.dir();
        for name in [CONFIG_FILE, PREPROCESSOR_FILE] {
            let src = config_dir.join(name);
            if src.exists() {
                std::fs::copy(&src, tmp.join(name))
                    .with_context(|| format!("copying {}", src.display()))?;
            }
        }
        if out.exists() {
            // An empty directory: rename(2) replaces it.
            std::fs::remove_dir(out).with_context(|| format!("replacing {}", out.display()))?;
        }
        std::fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        Ok(summary)
    })();
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Merge safetensors files. Writes `out` through a temporary file in the same directory.
pub fn merge_files(
    base: &Path,
    models: &[PathBuf],
    lambdas: &[f64],
    out: &Path,
) -> Result<MergeSummary> {
    merge_files_as(base, models, lambdas, out, (base, models))
}

/// [`merge_files`] where the files may be converted copies: `labels` (base, models) name the inputs the
/// user gave, in messages and in the output's merge record.
fn merge_files_as(
    base: &Path,
    models: &[PathBuf],
    lambdas: &[f64],
    out: &Path,
    labels: (&Path, &[PathBuf]),
) -> Result<MergeSummary> {
    ensure!(
        models.len() == lambdas.len(),
        "{} models but {} lambdas",
        models.len(),
        lambdas.len()
    );
    let base_map = map_file(base)?;
    let model_maps: Vec<memmap2::Mmap> =
        models.iter().map(|m| map_file(m)).collect::<Result<_>>()?;
    let base_st = parse(&base_map, base)?;
    let (_, base_meta) = SafeTensors::read_metadata(&base_map)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", base.display()))?;
    let model_sts: Vec<SafeTensors> = model_maps
        .iter()
        .zip(models)
        .map(|(m, p)| parse(m, p))
        .collect::<Result<_>>()?;
    for (st, path) in model_sts.iter().zip(labels.1) {
        check_same_layout(&base_st, labels.0, st, path)?;
    }

    // Same names/dtypes/shapes/offsets as the base, plus a record of the merge.
    let names = base_meta.offset_keys();
    let infos: Vec<(String, TensorInfo)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                base_meta.info(n).expect("name from offset_keys").clone(),
            )
        })
        .collect();
    let mut user_meta: HashMap<String, String> = base_meta.metadata().clone().unwrap_or_default();
    let record = serde_json::json!({
        "base": labels.0.display().to_string(),
        "models": labels.1.iter().map(|m| m.display().to_string()).collect::<Vec<_>>(),
        "lambdas": lambdas,
    });
    user_meta.insert("culturemert_merge".into(), record.to_string());
    let header_meta = Metadata::new(Some(user_meta), infos)
        .map_err(|e| anyhow::anyhow!("building the output header: {e:?}"))?;
    let mut header = serde_json::to_string(&header_meta)?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');

    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|s| s.to_str()).unwrap_or("merge"),
        std::process::id()
    ));
    let result = (|| -> Result<MergeSummary> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        let mut summary = MergeSummary {
            tensors: names.len(),
            float_elements: 0,
            copied_integer_tensors: 0,
        };
        let mut bytes = Vec::new();
        for name in &names {
            let b = base_st.tensor(name).expect("checked");
            let ms: Vec<&[u8]> = model_sts
                .iter()
                .map(|s| s.tensor(name).expect("checked").data())
                .collect();
            match FloatKind::of(b.dtype()) {
                Some(kind) => {
                    let n = b.data().len() / kind.size();
                    summary.float_elements += n;
                    let c = CHUNK.min(n);
                    let (mut acc, mut bv, mut xv) = (vec![0f64; c], vec![0f64; c], vec![0f64; c]);
                    let mut start = 0;
                    while start < n {
                        let end = (start + CHUNK).min(n);
                        let len = end - start;
                        merge_chunk(
                            kind,
                            b.data(),
                            &ms,
                            lambdas,
                            (start, end),
                            &mut acc[..len],
                            &mut bv[..len],
                            &mut xv[..len],
                        );
                        bytes.clear();
                        kind.encode(&acc[..end - start], &mut bytes);
                        w.write_all(&bytes)?;
                        let range = start * kind.size()..end * kind.size();
                        release(&base_map, &b.data()[range.clone()]);
                        for (map, data) in model_maps.iter().zip(&ms) {
                            release(map, &data[range.clone()]);
                        }
                        start = end;
                    }
                }
                None if is_exact_dtype(b.dtype()) => {
                    for (m, path) in ms.iter().zip(labels.1) {
                        ensure!(
                            *m == b.data(),
                            "integer tensor '{name}' ({:?}) differs between the base and {}: \
                             integer tensors cannot be merged, they must be identical",
                            b.dtype(),
                            path.display()
                        );
                    }
                    summary.copied_integer_tensors += 1;
                    w.write_all(b.data())?;
                }
                None => bail!(
                    "tensor '{name}' has dtype {:?}, which merge does not support",
                    b.dtype()
                ),
            }
            release(&base_map, b.data());
            for (map, data) in model_maps.iter().zip(&ms) {
                release(map, data);
            }
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        Ok(summary)
    })();
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// acc[k] = base[k] + sum_i lambda_i (model_i[k] - base[k]) for elements start..end, in f64.
/// `b` and `x` are scratch buffers of the chunk's length.
#[allow(clippy::too_many_arguments)]
fn merge_chunk(
    kind: FloatKind,
    base: &[u8],
    models: &[&[u8]],
    lambdas: &[f64],
    (start, end): (usize, usize),
    acc: &mut [f64],
    b: &mut [f64],
    x: &mut [f64],
) {
    let s = kind.size();
    kind.decode(&base[start * s..end * s], b);
    acc.copy_from_slice(b);
    for (m, &lam) in models.iter().zip(lambdas) {
        kind.decode(&m[start * s..end * s], x);
        for ((a, &xi), &bi) in acc.iter_mut().zip(x.iter()).zip(b.iter()) {
            *a += lam * (xi - bi);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum FloatKind {
    F64,
    F32,
    F16,
    Bf16,
}

impl FloatKind {
    fn of(d: Dtype) -> Option<Self> {
        match d {
            Dtype::F64 => Some(Self::F64),
            Dtype::F32 => Some(Self::F32),
            Dtype::F16 => Some(Self::F16),
            Dtype::BF16 => Some(Self::Bf16),
            _ => None,
        }
    }
    fn size(self) -> usize {
        match self {
            Self::F64 => 8,
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }
    fn decode_one(self, b: &[u8]) -> f64 {
        match self {
            Self::F64 => f64::from_le_bytes(b.try_into().unwrap()),
            Self::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            Self::F16 => f16::from_bits(u16::from_le_bytes(b.try_into().unwrap())).to_f64(),
            Self::Bf16 => bf16::from_bits(u16::from_le_bytes(b.try_into().unwrap())).to_f64(),
        }
    }
    fn decode(self, bytes: &[u8], out: &mut [f64]) {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(self.size())) {
            *o = self.decode_one(b);
        }
    }
    /// Round each value once to the stored dtype (round to nearest even).
    fn encode(self, vals: &[f64], out: &mut Vec<u8>) {
        for &v in vals {
            match self {
                Self::F64 => out.extend_from_slice(&v.to_le_bytes()),
                Self::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
                Self::F16 => out.extend_from_slice(&f16::from_f64(v).to_bits().to_le_bytes()),
                Self::Bf16 => out.extend_from_slice(&bf16::from_f64(v).to_bits().to_le_bytes()),
            }
        }
    }
}

fn is_exact_dtype(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

/// Drop processed input pages from this process's resident set, so the resident memory stays a few
/// MB instead of growing to the size of all inputs.
fn release(map: &memmap2::Mmap, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let offset = data.as_ptr() as usize - map.as_ptr() as usize;
    // Safety: the mapping is read-only and file-backed, so MADV_DONTNEED only discards cached pages;
    // a later read of the same bytes faults them in again from the unchanged file.
    #[cfg(unix)]
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, data.len())
    };
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Safety: the inputs are read-only for the duration of the merge; a concurrent writer would be a
    // user error (same assumption as every safetensors loader).
    unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("memory-mapping {}", path.display()))
}

fn parse<'a>(buf: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(buf)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display()))
}

/// Same key set, and per key the same dtype and shape.
fn check_same_layout(
    base: &SafeTensors,
    base_path: &Path,
    other: &SafeTensors,
    path: &Path,
) -> Result<()> {
    let bk: BTreeSet<&str> = base.names().into_iter().collect();
    let ok: BTreeSet<&str> = other.names().into_iter().collect();
    if let Some(k) = bk.difference(&ok).next() {
        bail!(
            "tensor '{k}' is in the base {} but not in {}",
            base_path.display(),
            path.display()
        );
    }
    if let Some(k) = ok.difference(&bk).next() {
        bail!(
            "tensor '{k}' is in {} but not in the base {}",
            path.display(),
            base_path.display()
        );
    }
    for k in &bk {
        let (b, o) = (
            base.tensor(k).expect("listed"),
            other.tensor(k).expect("listed"),
        );
        ensure!(
            b.dtype() == o.dtype(),
            "tensor '{k}': dtype {:?} in the base but {:?} in {}",
            b.dtype(),
            o.dtype(),
            path.display()
        );
        ensure!(
            b.shape() == o.shape(),
            "tensor '{k}': shape {:?} in the base but {:?} in {}",
            b.shape(),
            o.shape(),
            path.display()
        );
    }
    Ok(())
}

/// The config.json beside an input (a model directory, or the directory of a weights file).
fn read_config(input: &Path) -> Result<serde_json::Value> {
    let p = locate(input)?.dir().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Configs compared as JSON values, ignoring `_name_or_path`; names the first differing key.
fn compare_configs(base: &serde_json::Value, other: &serde_json::Value) -> Result<()> {
    let (Some(b), Some(o)) = (base.as_object(), other.as_object()) else {
        ensure!(
            base == other,
            "config.json is not a JSON object and differs"
        );
        return Ok(());
    };
    let keys: BTreeSet<&String> = b.keys().chain(o.keys()).collect();
    for k in keys {
        if k == "_name_or_path" {
            continue;
        }
        let (bv, ov) = (b.get(k), o.get(k));
        if bv != ov {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or("<missing>".to_string(), |v| v.to_string())
            };
            bail!(
                "config key '{k}': base has {} but this model has {}",
                show(bv),
                show(ov)
            );
        }
    }
    Ok(())
}

fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() {
        ensure!(
            out.is_dir(),
            "--out {} exists and is not a directory",
            out.display()
        );
        let nonempty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some();
        ensure!(
            !nonempty,
            "--out {} exists and is not empty; refusing to overwrite",
            out.display()
        );
    }
    Ok(())
}

fn temp_sibling(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {} has no directory name", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    ensure!(
        parent.is_dir(),
        "parent directory {} of --out does not exist",
        parent.display()
    );
    Ok(parent.join(format!(
        ".{}.merge-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}
