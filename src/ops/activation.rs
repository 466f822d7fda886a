//! The model's activation functions, chosen by the config (`hidden_act` for the FFN,
//! `feat_extract_activation` for the conv stack and the positional conv, as in transformers'
//! `ACT2FN`): exact GELU (`ops::gelu`, MERT's) and ReLU (here), forward and backward.

use anyhow::{bail, Result};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// 0.5 x (1 + erf(x / sqrt 2)) (transformers' "gelu").
    Gelu,
    /// max(x, 0); gradient 0 at x = 0, as torch's.
    Relu,
}

impl Activation {
    /// A transformers `ACT2FN` name.
    pub fn parse(name: &str) -> Result<Activation> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => bail!("activation {other:?} is not supported (\"gelu\" or \"relu\")"),
        }
    }

    pub fn forward(self, out: &mut [f32], x: &[f32]) {
        match self {
            Activation::Gelu => super::gelu::gelu_forward(out, x),
            Activation::Relu => relu_forward(out, x),
        }
    }

    /// dx += dout * f'(x).
    pub fn backward(self, dx: &mut [f32], dout: &[f32], x: &[f32]) {
        match self {
            Activation::Gelu => super::gelu::gelu_backward(dx, dout, x),
            Activation::Relu => relu_backward(dx, dout, x),
        }
    }
}

pub fn relu_forward(out: &mut [f32], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "relu: lengths differ");
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = if v > 0.0 { v } else { 0.0 };
            }
        });
}

/// dx += dout where x > 0.
pub fn relu_backward(dx: &mut [f32], dout: &[f32], x: &[f32]) {
    assert!(
        dx.len() == dout.len() && dx.len() == x.len(),
        "relu backward: lengths differ"
    );
    dx.par_chunks_mut(CHUNK)
        .zip(dout.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
        .for_each(|(dx, (dout, x))| {
            for ((d, &g), &v) in dx.iter_mut().zip(dout).zip(x) {
                if v > 0.0 {
                    *d += g;
                }
            }
        });
}
