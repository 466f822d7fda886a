//! The MARBLE probing head on pooled embeddings, forward and backward side by side:
//! (optional) softmax layer weighting -> Linear(H->U) -> ReLU -> Dropout -> Linear(U->T), and the
//! numerically stable BCE-with-logits loss.
//!
//! Input `x` is [batch, states, hidden] row-major: the time-mean-pooled hidden states a sample offers
//! to the head (one state for a fixed layer, hidden_states[1..] for `--layer all`).

use crate::model::weights::InitRng;
use crate::ops::dropout::{dropout_backward, dropout_forward};
use crate::ops::linear::{linear_backward, linear_forward};

/// Sizes of the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Hidden states per sample in `x` (1 for a fixed layer).
    pub states: usize,
    pub hidden: usize,
    /// Width of the hidden layer (512 in MARBLE).
    pub units: usize,
    pub tags: usize,
}

/// Head parameters; the linear weights are PyTorch-style [out, in].
#[derive(Clone, Debug)]
pub struct ProbeHead {
    pub shape: HeadShape,
    /// Softmax logits over the states (MARBLE's `aggregator`); None = a single state used as is.
    pub aggregator: Option<Vec<f32>>,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

/// Gradients, same layout as `ProbeHead` (aggregator empty when the head has none).
#[derive(Clone, Debug)]
pub struct HeadGrads {
    pub aggregator: Vec<f32>,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

/// Activations kept for the backward pass.
pub struct HeadCache {
    pub batch: usize,
    /// Softmax weights over the states (empty without aggregator).
    pub weights: Vec<f32>,
    /// Weighted sum of the states [batch, hidden].
    pub pooled: Vec<f32>,
    /// Pre-ReLU hidden layer [batch, units].
    pub pre_relu: Vec<f32>,
    /// Post-dropout activations fed to the second linear [batch, units].
    pub act: Vec<f32>,
    pub dropout: Option<(f32, u64)>,
    pub logits: Vec<f32>,
}

fn softmax(a: &[f32]) -> Vec<f32> {
    let max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = a.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| (v / s) as f32).collect()
}

/// PyTorch nn.Linear's default init: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn uniform_init(n: usize, fan_in: usize, rng: &mut InitRng) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    (0..n)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect()
}

impl HeadGrads {
    pub fn zeros_like(head: &ProbeHead) -> Self {
        HeadGrads {
            aggregator: vec![0.0; head.aggregator.as_ref().map_or(0, Vec::len)],
            w1: vec![0.0; head.w1.len()],
            b1: vec![0.0; head.b1.len()],
            w2: vec![0.0; head.w2.len()],
            b2: vec![0.0; head.b2.len()],
        }
    }

    pub fn slices(&self) -> Vec<&[f32]> {
        vec![&self.aggregator, &self.w1, &self.b1, &self.w2, &self.b2]
    }
}

impl ProbeHead {
    /// Seeded init: aggregator ~ N(0, 1) (MARBLE's `randn`), linears as PyTorch's default.
    pub fn init(shape: HeadShape, weighted: bool, rng: &mut InitRng) -> Self {
        assert!(
            weighted || shape.states == 1,
            "an unweighted head takes one state"
        );
        let aggregator = weighted.then(|| (0..shape.states).map(|_| rng.normal() as f32).collect());
        let (h, u, t) = (shape.hidden, shape.units, shape.tags);
        ProbeHead {
            shape,
            aggregator,
            w1: uniform_init(u * h, h, rng),
            b1: uniform_init(u, h, rng),
            w2: uniform_init(t * u, u, rng),
            b2: uniform_init(t, u, rng),
        }
    }

    /// Every parameter, in the order of `HeadGrads::slices` (an empty aggregator when there is none).
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        let agg: &mut [f32] = match &mut self.aggregator {
            Some(a) => a,
            None => &mut [],
        };
        vec![agg, &mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    /// The softmax layer weights (empty without aggregator).
    pub fn layer_weights(&self) -> Vec<f32> {
        self.aggregator.as_deref().map(softmax).unwrap_or_default()
    }

    /// Logits [batch, tags] for `x` [batch, states, hidden]; `dropout` = (p, seed) in training.
    pub fn forward(&self, x: &[f32], batch: usize, dropout: Option<(f32, u64)>) -> HeadCache {
        let HeadShape {
            states,
            hidden,
            units,
            tags,
        } = self.shape;
        assert_eq!(x.len(), batch * states * hidden, "probe head: input length");
        let weights = self.layer_weights();
        let pooled = if self.aggregator.is_some() {
            let mut p = vec![0.0f32; batch * hidden];
            for (dst, sample) in p
                .chunks_exact_mut(hidden)
                .zip(x.chunks_exact(states * hidden))
            {
                for (w, state) in weights.iter().zip(sample.chunks_exact(hidden)) {
                    for (d, &v) in dst.iter_mut().zip(state) {
                        *d += w * v;
                    }
                }
            }
            p
        } else {
            x.to_vec()
        };
        let mut pre_relu = vec![0.0f32; batch * units];
        linear_forward(
            &mut pre_relu,
            &pooled,
            &self.w1,
            Some(&self.b1),
            batch,
            hidden,
            units,
        );
        let relu: Vec<f32> = pre_relu.iter().map(|&v| v.max(0.0)).collect();
        let act = match dropout {
            Some((p, seed)) if p > 0.0 => {
                let mut out = vec![0.0f32; relu.len()];
                dropout_forward(&mut out, &relu, p, seed);
                out
            }
            _ => relu,
        };
        let mut logits = vec![0.0f32; batch * tags];
        linear_forward(
            &mut logits,
            &act,
            &self.w2,
            Some(&self.b2),
            batch,
            units,
            tags,
        );
        HeadCache {
            batch,
            weights,
            pooled,
            pre_relu,
            act,
            dropout,
            logits,
        }
    }

    /// Accumulates the gradients of a loss with d loss / d logits = `dlogits` into `grads`.
    pub fn backward(&self, x: &[f32], cache: &HeadCache, dlogits: &[f32], grads: &mut HeadGrads) {
        let HeadShape {
            states,
            hidden,
            units,
            tags,
        } = self.shape;
        let b = cache.batch;
        let mut dact = vec![0.0f32; b * units];
        linear_backward(
            Some(&mut dact),
            Some(&mut grads.w2),
            Some(&mut grads.b2),
            dlogits,
            &cache.act,
            &self.w2,
            b,
            units,
            tags,
        );
        let mut drelu = match cache.dropout {
            Some((p, seed)) if p > 0.0 => {
                let mut d = vec![0.0f32; dact.len()];
                dropout_backward(&mut d, &dact, p, seed);
                d
            }
            _ => dact,
        };
        for (d, &z) in drelu.iter_mut().zip(&cache.pre_relu) {
            if z <= 0.0 {
                *d = 0.0;
            }
        }
        let want_dx = self.aggregator.is_some();
        let mut dpooled = vec![0.0f32; if want_dx { b * hidden } else { 0 }];
        linear_backward(
            want_dx.then_some(&mut dpooled[..]),
            Some(&mut grads.w1),
            Some(&mut grads.b1),
            &drelu,
            &cache.pooled,
            &self.w1,
            b,
            hidden,
            units,
        );
        if want_dx {
            // d pooled / d w_s = x_s; softmax backward: da_s = w_s (g_s - sum_t w_t g_t).
            let mut g = vec![0.0f64; states];
            for (dp, sample) in dpooled
                .chunks_exact(hidden)
                .zip(x.chunks_exact(states * hidden))
            {
                for (gs, state) in g.iter_mut().zip(sample.chunks_exact(hidden)) {
                    *gs += dp
                        .iter()
                        .zip(state)
                        .map(|(&a, &v)| a as f64 * v as f64)
                        .sum::<f64>();
                }
            }
            let mean: f64 = g
                .iter()
                .zip(&cache.weights)
                .map(|(&gs, &w)| gs * w as f64)
                .sum();
            for ((da, &gs), &w) in grads.aggregator.iter_mut().zip(&g).zip(&cache.weights) {
                *da += (w as f64 * (gs - mean)) as f32;
            }
        }
    }
}

/// Mean BCE-with-logits over all entries and its gradient w.r.t. the logits.
/// Stable form: max(z, 0) - z y + log1p(exp(-|z|)); gradient (sigmoid(z) - y) / n.
pub fn bce_with_logits(logits: &[f32], targets: &[f32]) -> (f64, Vec<f32>) {
    assert_eq!(logits.len(), targets.len(), "bce: logits vs targets");
    let n = logits.len().max(1) as f64;
    let mut loss = 0.0f64;
    let grad = logits
        .iter()
        .zip(targets)
        .map(|(&z, &y)| {
            let (z, y) = (z as f64, y as f64);
            loss += z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
            ((sigmoid(z) - y) / n) as f32
        })
        .collect();
    (loss / n, grad)
}

/// Logistic function without overflow for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}
