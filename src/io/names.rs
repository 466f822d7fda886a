//! Names of the tensors written for a list of input files.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensor name of each input (its file stem), rejecting empty, non-UTF-8 and duplicate names.
pub fn tensor_names(inputs: &[PathBuf]) -> Result<Vec<String>> {
    let mut seen: HashMap<String, &Path> = HashMap::new();
    let mut names = Vec::with_capacity(inputs.len());
    for path in inputs {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{}: cannot name a tensor after this path", path.display()))?;
        if let Some(first) = seen.insert(stem.to_string(), path) {
            bail!(
                "two inputs would both be stored as tensor `{stem}`: {} and {} (rename one)",
                first.display(),
                path.display()
            );
        }
        names.push(stem.to_string());
    }
    Ok(names)
}
