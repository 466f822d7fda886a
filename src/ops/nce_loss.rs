//! MERT/HuBERT codebook NCE loss: cosine similarity / temperature against every codeword of each codebook,
//! cross entropy with the teacher's code (docs/objective.md section 2), summed over rows and codebooks.
//!
//! Shapes: `pred` [N, K*D] (the final projection of the N masked frames; codebook k uses columns
//! k*D..(k+1)*D), `codewords` [K*C, D] (`label_embs_concat`), `targets` [N, K] codes in 0..C.
//! Trick: with unit vectors a^ = a/|a| and b^ = b/|b|, d cos/da = (b^ - cos a^)/|a|, so the backward is two
//! GEMMs per codebook plus a rank-1 correction; logits are recomputed rather than stored.

use super::gemm::sgemm;
use rayon::prelude::*;

/// fairseq's cosine clamps each norm at this value (`max(|a|, eps)`).
const NORM_EPS: f32 = 1e-8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NceShape {
    pub rows: usize,
    pub codebooks: usize,
    pub codewords: usize,
    pub dim: usize,
}

/// Unit rows of x [rows, dim] (norm clamped at NORM_EPS) and the clamped norms.
fn normalise_rows(x: &[f32], rows: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut unit = vec![0.0; rows * dim];
    let mut norms = vec![0.0; rows];
    for ((u, n), r) in unit
        .chunks_exact_mut(dim)
        .zip(norms.iter_mut())
        .zip(x.chunks_exact(dim))
    {
        let norm = (r
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt() as f32)
            .max(NORM_EPS);
        *n = norm;
        for (ui, &ri) in u.iter_mut().zip(r) {
            *ui = ri / norm;
        }
    }
    (unit, norms)
}

/// Codebook k's slice of pred as a contiguous [N, D] matrix.
fn codebook_columns(pred: &[f32], s: &NceShape, k: usize) -> Vec<f32> {
    let (d, kd) = (s.dim, s.codebooks * s.dim);
    pred.chunks_exact(kd)
        .flat_map(|row| row[k * d..(k + 1) * d].iter().copied())
        .collect()
}

/// Cosine logits [N, C] / temperature, and per row the log-sum-exp.
fn logits_and_lse(
    a_unit: &[f32],
    b_unit: &[f32],
    s: &NceShape,
    temperature: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (n, c) = (s.rows, s.codewords);
    let mut logits = vec![0.0; n * c];
    sgemm(n, c, s.dim, a_unit, false, b_unit, true, &mut logits, false);
    let inv_t = 1.0 / temperature;
    let lse: Vec<f32> = logits
        .par_chunks_mut(c)
        .map(|row| {
            let mut max = f32::NEG_INFINITY;
            for v in row.iter_mut() {
                *v *= inv_t;
                max = max.max(*v);
            }
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            max + sum.ln() as f32
        })
        .collect();
    (logits, lse)
}

/// Per (row, codebook) loss `lse - logit[target]` into `loss` [N*K] (row-major), and whether the target
/// has the highest logit into `correct` [N*K].
pub fn nce_loss_forward(
    loss: &mut [f32],
    correct: &mut [bool],
    pred: &[f32],
    codewords: &[f32],
    targets: &[i32],
    s: &NceShape,
    temperature: f32,
) {
    let _profile = super::profile::scope(
        "nce fwd",
        2.0 * (s.rows * s.codebooks * s.codewords * s.dim) as f64,
    );
    let (n, k_total, c) = (s.rows, s.codebooks, s.codewords);
    assert_eq!(pred.len(), n * k_total * s.dim);
    assert_eq!(codewords.len(), k_total * c * s.dim);
    assert_eq!(targets.len(), n * k_total);
    for k in 0..k_total {
        let (a_unit, _) = normalise_rows(&codebook_columns(pred, s, k), n, s.dim);
        let (b_unit, _) = normalise_rows(&codewords[k * c * s.dim..(k + 1) * c * s.dim], c, s.dim);
        let (logits, lse) = logits_and_lse(&a_unit, &b_unit, s, temperature);
        for row in 0..n {
            let y = targets[row * k_total + k] as usize;
            assert!(y < c, "target {y} out of range for {c} codewords");
            let l = &logits[row * c..(row + 1) * c];
            loss[row * k_total + k] = lse[row] - l[y];
            correct[row * k_total + k] = l.iter().all(|&v| v <= l[y]);
        }
    }
}

/// Gradients of `dloss * sum(loss)` w.r.t. pred and codewords (accumulated).
#[allow(clippy::too_many_arguments)]
pub fn nce_loss_backward(
    mut dpred: Option<&mut [f32]>,
    mut dcodewords: Option<&mut [f32]>,
    dloss: f32,
    pred: &[f32],
    codewords: &[f32],
    targets: &[i32],
    s: &NceShape,
    temperature: f32,
) {
    let _profile = super::profile::scope(
        "nce bwd",
        4.0 * (s.rows * s.codebooks * s.codewords * s.dim) as f64,
    );
    let (n, k_total, c, d) = (s.rows, s.codebooks, s.codewords, s.dim);
    for k in 0..k_total {
        let (a_unit, a_norm) = normalise_rows(&codebook_columns(pred, s, k), n, d);
        let (b_unit, b_norm) = normalise_rows(&codewords[k * c * d..(k + 1) * c * d], c, d);
        let (mut g, lse) = logits_and_lse(&a_unit, &b_unit, s, temperature);
        // g <- dL/dcos = dloss/T * (softmax - onehot); keep cos*g row/column sums for the rank-1 terms.
        let inv_t = 1.0 / temperature;
        let mut cos_g = vec![0.0f32; n * c];
        let mut row_cos_g = vec![0.0f32; n];
        for row in 0..n {
            let y = targets[row * k_total + k] as usize;
            let mut acc = 0.0f64;
            let cg = &mut cos_g[row * c..(row + 1) * c];
            for (j, v) in g[row * c..(row + 1) * c].iter_mut().enumerate() {
                let cos = *v * temperature;
                let p = (*v - lse[row]).exp() - if j == y { 1.0 } else { 0.0 };
                *v = dloss * inv_t * p;
                cg[j] = *v * cos;
                acc += cg[j] as f64;
            }
            row_cos_g[row] = acc as f32;
        }
        if let Some(dp) = dpred.as_deref_mut() {
            let mut ga = vec![0.0; n * d];
            sgemm(n, d, c, &g, false, &b_unit, false, &mut ga, false);
            for row in 0..n {
                let dst = &mut dp[row * k_total * d + k * d..row * k_total * d + (k + 1) * d];
                let inv = 1.0 / a_norm[row];
                for j in 0..d {
                    dst[j] += (ga[row * d + j] - row_cos_g[row] * a_unit[row * d + j]) * inv;
                }
            }
        }
        if let Some(de) = dcodewords.as_deref_mut() {
            let mut gb = vec![0.0; c * d];
            sgemm(c, d, n, &g, true, &a_unit, false, &mut gb, false);
            let mut col_cos_g = vec![0.0f64; c];
            for row in cos_g.chunks_exact(c) {
                for (acc, &v) in col_cos_g.iter_mut().zip(row) {
                    *acc += v as f64;
                }
            }
            let base = k * c * d;
            for j in 0..c {
                let inv = 1.0 / b_norm[j];
                for t in 0..d {
                    de[base + j * d + t] +=
                        (gb[j * d + t] - col_cos_g[j] as f32 * b_unit[j * d + t]) * inv;
                }
            }
        }
    }
}
