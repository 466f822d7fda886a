//! Named parameters with gradients and freezing.

use crate::tensor::Tensor;
use anyhow::{bail, Result};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    /// Accumulated gradient (f32, same number of elements), allocated on first use.
    pub grad: Option<Vec<f32>>,
    pub frozen: bool,
}

/// The model's parameters in insertion order, addressable by name.
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, ParamId>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<ParamId> {
        if self.index.contains_key(name) {
            bail!("parameter {name} inserted twice");
        }
        let id = ParamId(self.params.len());
        self.params.push(Param {
            name: name.to_string(),
            value,
            grad: None,
            frozen: false,
        });
        self.index.insert(name.to_string(), id);
        Ok(id)
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.index.get(name).copied()
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self.params[id.0]
    }

    pub fn by_name(&self, name: &str) -> Option<&Param> {
        self.id(name).map(|id| self.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn num_elements(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    pub(crate) fn accumulate_grad(&mut self, id: ParamId, g: &[f32]) {
        let p = &mut self.params[id.0];
        match &mut p.grad {
            Some(acc) => crate::ops::elementwise::accumulate(acc, g),
            None => p.grad = Some(g.to_vec()),
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad = None;
        }
    }

    /// Freeze (or unfreeze) every parameter whose name matches one of the patterns. A pattern is a name
    /// prefix, or a glob with `*` matching any run of characters. Returns how many parameters matched.
    pub fn set_frozen(&mut self, patterns: &[&str], frozen: bool) -> usize {
        let mut n = 0;
        for p in &mut self.params {
            if patterns.iter().any(|pat| name_matches(pat, &p.name)) {
                p.frozen = frozen;
                n += 1;
            }
        }
        n
    }
}

/// `*` globbing; a pattern without `*` matches as a prefix.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.starts_with(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(part) {
                return false;
            }
            rest = &rest[part.len()..];
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}
