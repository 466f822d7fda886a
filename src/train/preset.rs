//! The training presets shipped inside the binary (presets/*.toml) and `extends`: a preset (or a
//! `--config` file) may start from another one and change only what differs.
//!
//! Merge rule of `extends = "base"`: tables merge key by key (recursively); an array of tables
//! (`[[stages]]`) merges element by element by position, extra elements are appended; any other value
//! (numbers, strings, arrays of values such as `trainable` or `betas`) replaces the base's.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Presets embedded in the binary, by name: every file in presets/ (a test checks that none is missing).
pub const PRESETS: [(&str, &str); 10] = [
    ("demo", include_str!("../../presets/demo.toml")),
    ("demo-base", include_str!("../../presets/demo-base.toml")),
    (
        "demo-single",
        include_str!("../../presets/demo-single.toml"),
    ),
    (
        "culturemert",
        include_str!("../../presets/culturemert.toml"),
    ),
    (
        "culturemert-alpha10",
        include_str!("../../presets/culturemert-alpha10.toml"),
    ),
    ("makammert", include_str!("../../presets/makammert.toml")),
    (
        "hindustanimert",
        include_str!("../../presets/hindustanimert.toml"),
    ),
    (
        "carnaticmert",
        include_str!("../../presets/carnaticmert.toml"),
    ),
    ("lyramert", include_str!("../../presets/lyramert.toml")),
    (
        "mert-scratch",
        include_str!("../../presets/mert-scratch.toml"),
    ),
];

/// Longest chain of `extends` followed before giving up (a cycle).
const MAX_EXTENDS_DEPTH: usize = 8;

pub fn preset_text(name: &str) -> Result<&'static str> {
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok(text),
        None => {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            bail!("unknown preset {name:?}; presets: {}", names.join(", "))
        }
    }
}

/// Parse `text` and resolve its `extends` chain. `dir` is the directory of the file the text came from
/// (None for a shipped preset): there `extends` may also name a `.toml` file relative to it.
pub fn parse_with_extends(text: &str, origin: &str, dir: Option<&Path>) -> Result<toml::Value> {
    resolve(text, origin, dir, 0)
}

fn resolve(text: &str, origin: &str, dir: Option<&Path>, depth: usize) -> Result<toml::Value> {
    let mut value: toml::Value =
        toml::from_str(text).with_context(|| format!("{origin}: invalid TOML"))?;
    let Some(table) = value.as_table_mut() else {
        bail!("{origin}: not a TOML table");
    };
    let Some(parent) = table.remove("extends") else {
        return Ok(value);
    };
    let Some(parent) = parent.as_str() else {
        bail!("{origin}: `extends` must be a string (a preset name or a .toml path)");
    };
    if depth >= MAX_EXTENDS_DEPTH {
        bail!("{origin}: `extends` chain longer than {MAX_EXTENDS_DEPTH} (a cycle?)");
    }
    let mut base = match dir.filter(|_| parent.ends_with(".toml")) {
        Some(dir) => {
            let path = dir.join(parent);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{origin}: reading extended {}", path.display()))?;
            let next_dir = path.parent().map(Path::to_path_buf);
            resolve(
                &text,
                &path.display().to_string(),
                next_dir.as_deref(),
                depth + 1,
            )?
        }
        None => {
            let text = preset_text(parent).with_context(|| format!("{origin}: extends"))?;
            resolve(text, &format!("preset {parent}"), None, depth + 1)?
        }
    };
    merge_into(&mut base, value);
    Ok(base)
}

/// Overlay `top` on `base` by the rule in the module comment.
fn merge_into(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (key, value) in t {
                match b.get_mut(&key) {
                    Some(slot) => merge_into(slot, value),
                    None => {
                        b.insert(key, value);
                    }
                }
            }
        }
        (toml::Value::Array(b), toml::Value::Array(t))
            if is_table_array(b) && is_table_array(&t) =>
        {
            for (i, value) in t.into_iter().enumerate() {
                match b.get_mut(i) {
                    Some(slot) => merge_into(slot, value),
                    None => b.push(value),
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn is_table_array(a: &[toml::Value]) -> bool {
    !a.is_empty() && a.iter().all(toml::Value::is_table)
}
