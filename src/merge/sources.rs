//! Merge inputs: where an input's weights are (safetensors or `pytorch_model.bin`, in a directory or
//! given as a file) and, when the streaming merge cannot read them as they are, a safetensors copy under
//! the base's tensor names.

use super::WEIGHTS_FILE;
use crate::model::weights::{RawTensors, POS_CONV_G, POS_CONV_V};
use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The PyTorch checkpoint name in an HF directory.
pub const TORCH_BIN_FILE: &str = "pytorch_model.bin";

/// The other spelling of each weight-norm tensor (torch.nn.utils.parametrizations.weight_norm).
const WEIGHT_NORM_SPELLINGS: [(&str, &str); 2] = [
    (
        POS_CONV_G,
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        POS_CONV_V,
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
];

/// One input's weights file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Weights {
    Safetensors(PathBuf),
    TorchBin(PathBuf),
}

/// A directory's `model.safetensors`, else its `pytorch_model.bin`; a file: `.bin` / `.pt` / `.pth` is
/// a torch.save checkpoint, anything else safetensors.
pub fn locate(input: &Path) -> Result<Weights> {
    if input.is_dir() {
        let st = input.join(WEIGHTS_FILE);
        let bin = input.join(TORCH_BIN_FILE);
        if st.is_file() {
            return Ok(Weights::Safetensors(st));
        }
        ensure!(
            bin.is_file(),
            "{} has neither {WEIGHTS_FILE} nor {TORCH_BIN_FILE}",
            input.display()
        );
        return Ok(Weights::TorchBin(bin));
    }
    ensure!(
        input.is_file(),
        "model {} does not exist (give an HF model directory or its weights file)",
        input.display()
    );
    let ext = input.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(match ext.to_ascii_lowercase().as_str() {
        "bin" | "pt" | "pth" => Weights::TorchBin(input.to_path_buf()),
        _ => Weights::Safetensors(input.to_path_buf()),
    })
}

/// Tensor names of a safetensors file (header only).
pub fn tensor_names(path: &Path) -> Result<BTreeSet<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display())
    })?;
    Ok(meta.offset_keys().into_iter().collect())
}

/// `name` in the spelling `names` uses, if `name` is a weight-norm tensor spelled the other way.
fn base_spelling(name: &str, names: &BTreeSet<String>) -> Option<&'static str> {
    WEIGHT_NORM_SPELLINGS.iter().find_map(|&(a, b)| {
        if name == a && names.contains(b) {
            Some(b)
        } else if name == b && names.contains(a) {
            Some(a)
        } else {
            None
        }
    })
}

impl Weights {
    /// The weights file.
    pub fn path(&self) -> &Path {
        match self {
            Weights::Safetensors(p) | Weights::TorchBin(p) => p,
        }
    }

    /// The directory holding the weights file (and config.json).
    pub fn dir(&self) -> &Path {
        match self.path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// A safetensors file with these weights: the file itself when it is safetensors already spelled
    /// like `base_names` (or no base is given), else a copy written to `scratch` with weight-norm
    /// tensors renamed to the base's spelling.
    pub fn as_safetensors(
        &self,
        base_names: Option<&BTreeSet<String>>,
        scratch: &Path,
    ) -> Result<PathBuf> {
        let raw: RawTensors = match self {
            Weights::Safetensors(p) => {
                let own = tensor_names(p)?;
                let renames = base_names
                    .is_some_and(|names| own.iter().any(|n| base_spelling(n, names).is_some()));
                if !renames {
                    return Ok(p.clone());
                }
                crate::model::weights::read_safetensors(p)?
            }
            Weights::TorchBin(p) => crate::model::torch_bin::read_as_raw_tensors(p)?,
        };
        let mut renamed = RawTensors::new();
        for (name, t) in raw {
            let name = match base_names.and_then(|names| base_spelling(&name, names)) {
                Some(b) => b.to_string(),
                None => name,
            };
            if renamed.insert(name.clone(), t).is_some() {
                bail!(
                    "{}: tensor {name} appears in both weight-norm spellings",
                    self.path().display()
                );
            }
        }
        write_raw(&renamed, scratch)
            .with_context(|| format!("converting {} to safetensors", self.path().display()))?;
        Ok(scratch.to_path_buf())
    }
}

fn write_raw(tensors: &RawTensors, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes: Vec<(&String, Vec<u8>, &Vec<usize>, _)> = tensors
        .iter()
        .map(|(n, (shape, data))| (n, data.to_le_bytes(), shape, data.dtype()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, shape, dtype)| {
            Ok((
                n.to_string(),
                TensorView::new(dtype.to_safetensors(), shape.to_vec(), b)?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("writing {}", path.display()))
}
