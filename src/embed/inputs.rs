//! What a corpus run reads: audio files given directly, directories (recursive, by audio extension) and
//! manifests (a `.txt` / `.tsv` / `.lst` file: one path per line, `#` comments, paths relative to the
//! manifest's directory; in `.tsv` the path is the first column). Each input gets a relative path that
//! names its output: the path below the directory it was found in, the path as written in a manifest, or
//! the file name of a file given directly.

use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Extensions (lower case) a directory walk picks up.
pub const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "flac", "mp3", "ogg", "oga"];

/// Extensions (lower case) that mark a manifest.
pub const MANIFEST_EXTENSIONS: [&str; 3] = ["txt", "tsv", "lst"];

/// One audio input of a corpus run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Where to read it.
    pub path: PathBuf,
    /// A relative path naming its outputs (e.g. `rock/song.wav`); unique within one listing.
    pub rel: PathBuf,
}

fn extension_in(path: &Path, set: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| set.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether a path is read as a manifest (by extension).
pub fn is_manifest(path: &Path) -> bool {
    extension_in(path, &MANIFEST_EXTENSIONS)
}

/// Expands files, directories and manifests into inputs, in argument order (directories sorted).
/// A missing directory or manifest is an error here; a missing or unreadable audio file is not (it
/// becomes that input's error when it is decoded). Two inputs with the same relative path are an error.
pub fn list_inputs(sources: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for src in sources {
        if src.is_dir() {
            let mut files = Vec::new();
            walk_audio(src, &mut files)?;
            files.sort();
            for path in files {
                let rel = path
                    .strip_prefix(src)
                    .expect("walked below src")
                    .to_path_buf();
                out.push(Input { path, rel });
            }
        } else if is_manifest(src) {
            out.extend(read_manifest(src)?);
        } else {
            out.push(Input {
                path: src.clone(),
                rel: file_name_of(src)?,
            });
        }
    }
    let mut seen: HashMap<&Path, &Path> = HashMap::new();
    for i in &out {
        if let Some(first) = seen.insert(&i.rel, &i.path) {
            bail!(
                "{} and {} would both be written as {} (give them from different places, or rename one)",
                first.display(),
                i.path.display(),
                i.rel.display()
            );
        }
    }
    Ok(out)
}

fn file_name_of(path: &Path) -> Result<PathBuf> {
    path.file_name()
        .map(PathBuf::from)
        .with_context(|| format!("{}: not a file name", path.display()))
}

/// Audio files below `dir`, following directory symlinks only through `metadata` (no loop detection is
/// needed for ordinary trees; a symlink loop shows up as an I/O error).
fn walk_audio(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("listing directory {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing directory {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk_audio(&path, out)?;
        } else if extension_in(&path, &AUDIO_EXTENSIONS) {
            out.push(path);
        }
    }
    Ok(())
}

/// Inputs of one manifest. A relative entry keeps its (normalised) path as its relative name; an
/// absolute one, or one that climbs out with `..`, is named by its file name.
pub fn read_manifest(path: &Path) -> Result<Vec<Input>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = if tsv {
            line.split('\t').next().unwrap_or("").trim()
        } else {
            line
        };
        ensure!(
            !entry.is_empty(),
            "{}:{}: empty path",
            path.display(),
            n + 1
        );
        let entry = Path::new(entry);
        let rel = match normalised_relative(entry) {
            Some(rel) => rel,
            None => file_name_of(entry).with_context(|| format!("{}:{}", path.display(), n + 1))?,
        };
        out.push(Input {
            path: base.join(entry),
            rel,
        });
    }
    Ok(out)
}

/// `a/./b` -> `a/b`; None for absolute paths and paths with `..`.
fn normalised_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_are_normalised() {
        assert_eq!(
            normalised_relative(Path::new("./a/./b.wav")),
            Some(PathBuf::from("a/b.wav"))
        );
        assert_eq!(normalised_relative(Path::new("../b.wav")), None);
        assert_eq!(normalised_relative(Path::new("/x/b.wav")), None);
    }
}
