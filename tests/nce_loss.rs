//! The codebook NCE loss: forward vs a naive f64 cosine/softmax implementation, backward vs central
//! finite differences of the f64 reference, on a ragged shape.

use culturemert_raw::model::weights::InitRng;
use culturemert_raw::ops::nce_loss::{nce_loss_backward, nce_loss_forward, NceShape};

fn reference_loss(pred: &[f64], cw: &[f64], targets: &[i32], s: &NceShape, t: f64) -> f64 {
    let (k_total, c, d) = (s.codebooks, s.codewords, s.dim);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-8);
    let mut total = 0.0;
    for row in 0..s.rows {
        for k in 0..k_total {
            let a = &pred[row * k_total * d + k * d..row * k_total * d + (k + 1) * d];
            let logits: Vec<f64> = (0..c)
                .map(|j| {
                    let b = &cw[(k * c + j) * d..(k * c + j + 1) * d];
                    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b)) / t
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            total += lse - logits[targets[row * k_total + k] as usize];
        }
    }
    total
}

#[test]
fn nce_loss_matches_reference_and_finite_differences() {
    let s = NceShape {
        rows: 7,
        codebooks: 3,
        codewords: 11,
        dim: 5,
    };
    let t = 0.1f32;
    let mut rng = InitRng::new(3);
    let pred: Vec<f32> = (0..s.rows * s.codebooks * s.dim)
        .map(|_| rng.normal() as f32)
        .collect();
    let cw: Vec<f32> = (0..s.codebooks * s.codewords * s.dim)
        .map(|_| rng.uniform() as f32)
        .collect();
    let targets: Vec<i32> = (0..s.rows * s.codebooks)
        .map(|_| (rng.next_u64() % s.codewords as u64) as i32)
        .collect();

    let mut loss = vec![0.0; s.rows * s.codebooks];
    let mut correct = vec![false; s.rows * s.codebooks];
    nce_loss_forward(&mut loss, &mut correct, &pred, &cw, &targets, &s, t);
    let ours: f64 = loss.iter().map(|&v| v as f64).sum();
    let p64: Vec<f64> = pred.iter().map(|&v| v as f64).collect();
    let c64: Vec<f64> = cw.iter().map(|&v| v as f64).collect();
    let truth = reference_loss(&p64, &c64, &targets, &s, t as f64);
    assert!(
        (ours - truth).abs() <= 1e-5 * truth.abs(),
        "loss {ours} vs {truth}"
    );

    let dloss = 0.7f32;
    let mut dpred = vec![0.0; pred.len()];
    let mut dcw = vec![0.0; cw.len()];
    nce_loss_backward(
        Some(&mut dpred),
        Some(&mut dcw),
        dloss,
        &pred,
        &cw,
        &targets,
        &s,
        t,
    );
    // Central differences of the f64 reference (eps 1e-5: truncation ~1e-10, far below the tolerance).
    let eps = 1e-5;
    let fd = |which: usize, i: usize| {
        let (mut pp, mut cc) = (p64.clone(), c64.clone());
        let (mut pm, mut cm) = (p64.clone(), c64.clone());
        if which == 0 {
            pp[i] += eps;
            pm[i] -= eps;
        } else {
            cc[i] += eps;
            cm[i] -= eps;
        }
        dloss as f64
            * (reference_loss(&pp, &cc, &targets, &s, t as f64)
                - reference_loss(&pm, &cm, &targets, &s, t as f64))
            / (2.0 * eps)
    };
    let max_p = (0..pred.len()).map(|i| fd(0, i).abs()).fold(0.0, f64::max);
    for (i, &g) in dpred.iter().enumerate() {
        let e = (g as f64 - fd(0, i)).abs();
        assert!(
            e <= 1e-4 * max_p,
            "dpred[{i}] = {g} vs {} (max {max_p})",
            fd(0, i)
        );
    }
    let max_c = (0..cw.len()).map(|i| fd(1, i).abs()).fold(0.0, f64::max);
    for (i, &g) in dcw.iter().enumerate() {
        let e = (g as f64 - fd(1, i)).abs();
        assert!(
            e <= 1e-4 * max_c,
            "dcodewords[{i}] = {g} vs {} (max {max_c})",
            fd(1, i)
        );
    }
    // Accumulation and skipping.
    let mut again = dpred.clone();
    nce_loss_backward(Some(&mut again), None, dloss, &pred, &cw, &targets, &s, t);
    for (a, b) in again.iter().zip(&dpred) {
        assert!((a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1e-3));
    }
}

#[test]
fn nce_accuracy_flags_argmax() {
    // Codeword j of each codebook points along axis j; a prediction along axis 2 is "correct" for target 2 only.
    let s = NceShape {
        rows: 1,
        codebooks: 1,
        codewords: 4,
        dim: 4,
    };
    let mut cw = vec![0.0; 16];
    for j in 0..4 {
        cw[j * 4 + j] = 1.0;
    }
    let pred = vec![0.0, 0.1, 2.0, 0.0];
    for (target, expect) in [(2, true), (1, false)] {
        let (mut loss, mut correct) = (vec![0.0], vec![false]);
        nce_loss_forward(&mut loss, &mut correct, &pred, &cw, &[target], &s, 0.1);
        assert_eq!(correct[0], expect);
    }
}
