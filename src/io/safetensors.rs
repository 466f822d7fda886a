//! Safetensors files: read every tensor, write through a temporary name and a rename.

use crate::tensor::{CpuData, DType, Tensor};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Tensors read from a checkpoint file: name -> (shape, data).
pub type RawTensors = BTreeMap<String, (Vec<usize>, CpuData)>;

/// Read every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<RawTensors> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut out = RawTensors::new();
    for (name, view) in st.tensors() {
        let dtype = DType::from_safetensors(view.dtype())
            .with_context(|| format!("{}: tensor {name}", path.display()))?;
        let data = CpuData::from_le_bytes(dtype, view.data())?;
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Write tensors to a safetensors file through a temporary name and a rename (nothing partial is left).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>, DType)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.cpu_data().to_le_bytes(),
                t.shape().to_vec(),
                t.dtype(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s, d)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(d.to_safetensors(), s.clone(), b)?,
            ))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, metadata).context("serialising safetensors")?;
    write_atomically(path, &data)
}

/// Write a file through `<path>.tmp` and a rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
