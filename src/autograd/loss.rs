//! Tape-level pieces of the pre-training objective: row gathering, the codebook NCE loss, MSE, the feature
//! penalty and weighted sums of scalars. Scalars are [1]-shaped vars.

use super::tape::{Tape, Var};
use crate::ops::elementwise as ew;
use crate::ops::nce_loss::{self, NceShape};
use crate::tensor::Tensor;
use anyhow::{ensure, Result};

/// Rows `rows` (indices into the flattened leading dims) of x [..., H] -> [N, H].
pub fn gather_rows(tape: &mut Tape, x: &Var, rows: &[usize]) -> Result<Var> {
    let h = *x.shape().last().unwrap();
    let total = x.value.numel() / h;
    ensure!(
        rows.iter().all(|&r| r < total),
        "gather_rows: index out of range for {:?}",
        x.shape()
    );
    let mut out = Vec::with_capacity(rows.len() * h);
    for &r in rows {
        out.extend_from_slice(&x.data()[r * h..(r + 1) * h]);
    }
    let rows = rows.to_vec();
    Ok(tape.record(
        Tensor::from_f32(&[rows.len(), h], out),
        &[x],
        move |dout, g| {
            if let Some(d) = g[0].as_deref_mut() {
                for (i, &r) in rows.iter().enumerate() {
                    ew::accumulate(&mut d[r * h..(r + 1) * h], &dout[i * h..(i + 1) * h]);
                }
            }
        },
    ))
}

/// Summed NCE loss over rows and codebooks, and the number of (row, codebook) pairs whose target is the
/// arg-max (for logging accuracy). `targets` [N, K].
pub fn nce_loss(
    tape: &mut Tape,
    pred: &Var,
    codewords: &Var,
    targets: &[i32],
    codebooks: usize,
    temperature: f32,
) -> Result<(Var, usize)> {
    ensure!(
        pred.shape().len() == 2 && codewords.shape().len() == 2,
        "nce_loss: pred {:?}, codewords {:?}",
        pred.shape(),
        codewords.shape()
    );
    let (n, kd) = (pred.shape()[0], pred.shape()[1]);
    ensure!(
        codebooks > 0 && kd.is_multiple_of(codebooks),
        "nce_loss: {kd} prediction columns for {codebooks} codebooks"
    );
    let dim = kd / codebooks;
    ensure!(
        codewords.shape()[1] == dim && codewords.shape()[0].is_multiple_of(codebooks),
        "nce_loss: codewords {:?} for {codebooks} codebooks of dim {dim}",
        codewords.shape()
    );
    let s = NceShape {
        rows: n,
        codebooks,
        codewords: codewords.shape()[0] / codebooks,
        dim,
    };
    ensure!(
        targets.len() == n * codebooks,
        "nce_loss: {} targets for {n} rows x {codebooks} codebooks",
        targets.len()
    );
    ensure!(
        targets
            .iter()
            .all(|&t| t >= 0 && (t as usize) < s.codewords),
        "nce_loss: a target is outside 0..{}",
        s.codewords
    );
    let mut loss = vec![0.0; n * codebooks];
    let mut correct = vec![false; n * codebooks];
    nce_loss::nce_loss_forward(
        &mut loss,
        &mut correct,
        pred.data(),
        codewords.data(),
        targets,
        &s,
        temperature,
    );
    let total: f64 = loss.iter().map(|&v| v as f64).sum();
    let (ps, cs, ts) = (
        pred.value.clone(),
        codewords.value.clone(),
        targets.to_vec(),
    );
    let var = tape.record(
        Tensor::from_f32(&[1], vec![total as f32]),
        &[pred, codewords],
        move |dout, g| {
            let mut it = g.iter_mut().map(|s| s.as_deref_mut());
            let (dp, dc) = (it.next().flatten(), it.next().flatten());
            nce_loss::nce_loss_backward(
                dp,
                dc,
                dout[0],
                ps.data(),
                cs.data(),
                &ts,
                &s,
                temperature,
            );
        },
    );
    Ok((var, correct.iter().filter(|&&c| c).count()))
}

/// mean((pred - target)^2) over all elements (nn.MSELoss()).
pub fn mse(tape: &mut Tape, pred: &Var, target: &[f32]) -> Result<Var> {
    ensure!(
        target.len() == pred.value.numel() && !target.is_empty(),
        "mse: {} targets for {:?}",
        target.len(),
        pred.shape()
    );
    let n = target.len();
    let diff: Vec<f32> = pred.data().iter().zip(target).map(|(p, t)| p - t).collect();
    let value = diff.iter().map(|&d| (d as f64) * (d as f64)).sum::<f64>() / n as f64;
    Ok(tape.record(
        Tensor::from_f32(&[1], vec![value as f32]),
        &[pred],
        move |dout, g| {
            if let Some(d) = g[0].as_deref_mut() {
                ew::accumulate_scaled(d, &diff, 2.0 * dout[0] / n as f32);
            }
        },
    ))
}

/// mean(x^2) over all elements (the conv-feature L2 penalty).
pub fn mean_square(tape: &mut Tape, x: &Var) -> Var {
    let n = x.value.numel();
    let value = x
        .data()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        / n as f64;
    let xs = x.value.clone();
    tape.record(
        Tensor::from_f32(&[1], vec![value as f32]),
        &[x],
        move |dout, g| {
            if let Some(d) = g[0].as_deref_mut() {
                ew::accumulate_scaled(d, xs.data(), 2.0 * dout[0] / n as f32);
            }
        },
    )
}

/// sum_i w_i * s_i of scalar vars.
pub fn weighted_sum(tape: &mut Tape, terms: &[(&Var, f32)]) -> Result<Var> {
    ensure!(
        terms.iter().all(|(v, _)| v.value.numel() == 1),
        "weighted_sum takes scalars"
    );
    let value: f64 = terms
        .iter()
        .map(|(v, w)| v.data()[0] as f64 * *w as f64)
        .sum();
    let weights: Vec<f32> = terms.iter().map(|(_, w)| *w).collect();
    let inputs: Vec<&Var> = terms.iter().map(|(v, _)| *v).collect();
    Ok(tape.record(
        Tensor::from_f32(&[1], vec![value as f32]),
        &inputs,
        move |dout, g| {
            for (slot, w) in g.iter_mut().zip(&weights) {
                if let Some(d) = slot.as_deref_mut() {
                    d[0] += w * dout[0];
                }
            }
        },
    ))
}
