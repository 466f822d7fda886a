//! The autograd tape: coarse ops record a backward closure; `backward` runs them in reverse.
//!
//! A `Var` carries its value (shared storage), so in no-grad mode nothing is retained beyond what the caller
//! holds. Backward closures keep only the tensors they need. Gradients of parameter leaves are accumulated
//! (`+=`) into the `ParamStore`, so gradient accumulation over micro-batches is free, and frozen parameters
//! enter the tape as constants: no gradient is computed for them or for anything only they feed.

use super::params::{ParamId, ParamStore};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// A value on the tape.
#[derive(Clone, Debug)]
pub struct Var {
    pub(crate) id: usize,
    pub(crate) needs_grad: bool,
    pub value: Tensor,
}

impl Var {
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    pub fn data(&self) -> &[f32] {
        self.value.data()
    }
    pub fn needs_grad(&self) -> bool {
        self.needs_grad
    }
}

/// Gradient buffers handed to a backward closure, one per op input: `None` when that input needs no gradient.
pub type GradSlots<'a> = [Option<&'a mut [f32]>];
type BackwardFn = Box<dyn FnOnce(&[f32], &mut GradSlots)>;

struct Node {
    output: usize,
    inputs: Vec<usize>,
    backward: BackwardFn,
}

pub struct Tape {
    recording: bool,
    next_id: usize,
    nodes: Vec<Node>,
    numels: Vec<usize>,
    param_leaves: Vec<(usize, ParamId)>,
}

impl Tape {
    /// A tape that records ops for backward.
    pub fn new() -> Self {
        Tape {
            recording: true,
            next_id: 0,
            nodes: Vec::new(),
            numels: Vec::new(),
            param_leaves: Vec::new(),
        }
    }

    /// A tape that records nothing (inference).
    pub fn no_grad() -> Self {
        Tape {
            recording: false,
            ..Tape::new()
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    fn fresh(&mut self, value: Tensor, needs_grad: bool) -> Var {
        let id = self.next_id;
        self.next_id += 1;
        if self.recording {
            self.numels.push(value.numel());
        }
        Var {
            id,
            needs_grad: needs_grad && self.recording,
            value,
        }
    }

    /// A constant input (no gradient).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.fresh(value, false)
    }

    /// A leaf whose gradient the caller wants (read it back from `backward`'s result with `grad_of`).
    pub fn leaf(&mut self, value: Tensor) -> Var {
        self.fresh(value, true)
    }

    /// A parameter: a leaf whose gradient is accumulated into the store, or a constant if frozen.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        let p = store.get(id);
        let var = self.fresh(p.value.to_f32(), !p.frozen);
        if var.needs_grad {
            self.param_leaves.push((var.id, id));
        }
        var
    }

    /// Record an op's output. `backward(dout, slots)` must accumulate into each `Some` slot (same order as
    /// `inputs`). Nothing is recorded when no input needs a gradient.
    pub fn record(
        &mut self,
        value: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&[f32], &mut GradSlots) + 'static,
    ) -> Var {
        let needs_grad = self.recording && inputs.iter().any(|v| v.needs_grad);
        let out = self.fresh(value, needs_grad);
        if needs_grad {
            self.nodes.push(Node {
                output: out.id,
                inputs: inputs
                    .iter()
                    .map(|v| if v.needs_grad { v.id } else { usize::MAX })
                    .collect(),
                backward: Box::new(backward),
            });
        }
        out
    }

    /// Run backward from seeds `(var, dL/dvar)`, consuming the tape. Parameter gradients are accumulated into
    /// `store`; the gradients of all other vars are returned (for leaves the caller made with `leaf`).
    pub fn backward(
        self,
        seeds: Vec<(&Var, Vec<f32>)>,
        store: &mut ParamStore,
    ) -> Result<Gradients> {
        if !self.recording {
            bail!("backward on a no-grad tape");
        }
        let mut grads: Vec<Option<Vec<f32>>> = (0..self.next_id).map(|_| None).collect();
        for (var, g) in seeds {
            if g.len() != var.value.numel() {
                bail!(
                    "seed gradient has {} values for a var of shape {:?}",
                    g.len(),
                    var.shape()
                );
            }
            if !var.needs_grad {
                continue;
            }
            match &mut grads[var.id] {
                Some(acc) => crate::ops::elementwise::accumulate(acc, &g),
                slot => *slot = Some(g),
            }
        }
        let numels = self.numels;
        for node in self.nodes.into_iter().rev() {
            let Some(dout) = grads[node.output].take() else {
                continue;
            };
            // Take each input's buffer out of `grads` so the closure can hold them all mutably; a var used
            // twice as an input gets a scratch buffer for its second use, summed back afterwards.
            let mut buffers: Vec<Option<Vec<f32>>> = Vec::with_capacity(node.inputs.len());
            for (i, &id) in node.inputs.iter().enumerate() {
                if id == usize::MAX {
                    buffers.push(None);
                } else if node.inputs[..i].contains(&id) {
                    buffers.push(Some(vec![0.0; numels[id]]));
                } else {
                    buffers.push(Some(
                        grads[id].take().unwrap_or_else(|| vec![0.0; numels[id]]),
                    ));
                }
            }
            {
                let mut slots: Vec<Option<&mut [f32]>> = buffers
                    .iter_mut()
                    .map(|b| b.as_mut().map(|v| v.as_mut_slice()))
                    .collect();
                (node.backward)(&dout, &mut slots);
            }
            for (i, (&id, buf)) in node.inputs.iter().zip(buffers).enumerate() {
                let Some(buf) = buf else { continue };
                if node.inputs[..i].contains(&id) {
                    crate::ops::elementwise::accumulate(
                        grads[id].as_mut().expect("first use restored"),
                        &buf,
                    );
                } else {
                    grads[id] = Some(buf);
                }
            }
        }
        for &(var_id, pid) in &self.param_leaves {
            if let Some(g) = grads[var_id].take() {
                store.accumulate_grad(pid, &g);
            }
        }
        Ok(Gradients { grads })
    }
}

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

/// Gradients of non-parameter vars after backward.
pub struct Gradients {
    grads: Vec<Option<Vec<f32>>>,
}

impl Gradients {
    /// dL/dvar, or None when no gradient reached it.
    pub fn grad_of(&self, var: &Var) -> Option<&[f32]> {
        self.grads.get(var.id).and_then(|g| g.as_deref())
    }
}
