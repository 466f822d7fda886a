//! Finite-difference checks of every CPU op's backward (src/ops), on small ragged shapes.
//!
//! Method: L(inputs) = Σ_i out_i R_i (accumulated in f64) with a fixed random R. For each input
//! element, the central difference (L(x+h) - L(x-h)) / (2h) uses the step h actually representable
//! in f32, and must match the analytic gradient within `ABS + REL·|g|`. The forward runs in f32, so
//! the FD noise is ~1e-7·|L terms|/h; ops linear in the checked input use h = 1e-2 (no truncation
//! error), nonlinear ones h = 3e-3 (truncation ~h²·f'''/6 ≈ 1e-5). Each check prints its max error.
//! Every backward is also checked to ACCUMULATE (second call adds the same gradient again) and
//! to do no work for `None` gradients (the remaining gradients are unchanged).

use culturemert_raw::ops::attention::{attention_backward, attention_forward, AttentionShape};
use culturemert_raw::ops::conv1d::{conv1d_backward, conv1d_forward, Conv1dShape};
use culturemert_raw::ops::dropout::{dropout_backward, dropout_forward};
use culturemert_raw::ops::gelu::{gelu_backward, gelu_forward};
use culturemert_raw::ops::group_norm::{group_norm_backward, group_norm_forward};
use culturemert_raw::ops::layer_norm::{layer_norm_backward, layer_norm_forward};
use culturemert_raw::ops::linear::{linear_backward, linear_forward};
use culturemert_raw::ops::pooling::{mean_pool_time_backward, mean_pool_time_forward};
use culturemert_raw::ops::weight_norm::{weight_norm_backward, weight_norm_forward};

/// Deterministic test data (the crate's splitmix64 -> uniform in [-1, 1)).
struct Rng(culturemert_raw::rng::SplitMix64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(culturemert_raw::rng::SplitMix64::new(seed))
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.0.uniform_f32() * 2.0 - 1.0) * scale)
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

const ABS: f64 = 5e-4;
const REL: f64 = 5e-4;

/// Central differences of `loss` w.r.t. every element of `x`, compared with `analytic`.
/// Returns the max |fd - analytic| / (1 + |analytic|) for the report.
fn check(name: &str, x: &[f32], analytic: &[f32], h: f32, loss: impl Fn(&[f32]) -> f64) -> f64 {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let mut xp = x.to_vec();
    let mut worst: f64 = 0.0;
    for i in 0..x.len() {
        let (hi, lo) = (x[i] + h, x[i] - h);
        xp[i] = hi;
        let lp = loss(&xp);
        xp[i] = lo;
        let lm = loss(&xp);
        xp[i] = x[i];
        let fd = (lp - lm) / (hi as f64 - lo as f64);
        let g = analytic[i] as f64;
        let err = (fd - g).abs();
        assert!(
            err <= ABS + REL * g.abs(),
            "{name}[{i}]: finite difference {fd} vs analytic {g} (err {err:.3e})"
        );
        worst = worst.max(err / (1.0 + g.abs()));
    }
    println!(
        "{name}: {} elements, h = {h}, max |fd - g|/(1+|g|) = {worst:.2e}",
        x.len()
    );
    worst
}

/// `twice` must equal 2·`once` (backward accumulates); tolerance for f32 reassociation only.
fn check_doubles(name: &str, once: &[f32], twice: &[f32]) {
    for (i, (&a, &b)) in once.iter().zip(twice).enumerate() {
        assert!(
            (b - 2.0 * a).abs() <= 1e-5 * (1.0 + a.abs()),
            "{name}[{i}]: second call gave {b}, first {a}"
        );
    }
}

fn check_same(name: &str, a: &[f32], b: &[f32]) {
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
            "{name}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn linear_gradients() {
    let (rows, fin, fout) = (7, 5, 3);
    let mut rng = Rng::new(1);
    let (x, w, b) = (
        rng.vec(rows * fin, 1.0),
        rng.vec(fout * fin, 1.0),
        rng.vec(fout, 1.0),
    );
    let r = rng.vec(rows * fout, 1.0);
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut out = vec![0.0; rows * fout];
        linear_forward(&mut out, x, w, Some(b), rows, fin, fout);
        dot(&out, &r)
    };
    let grads = |n: usize| {
        let (mut dx, mut dw, mut db) = (
            vec![0.0; rows * fin],
            vec![0.0; fout * fin],
            vec![0.0; fout],
        );
        for _ in 0..n {
            linear_backward(
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
                &r,
                &x,
                &w,
                rows,
                fin,
                fout,
            );
        }
        (dx, dw, db)
    };
    let (dx, dw, db) = grads(1);
    check("linear dx", &x, &dx, 1e-2, |p| fwd(p, &w, &b));
    check("linear dweight", &w, &dw, 1e-2, |p| fwd(&x, p, &b));
    check("linear dbias", &b, &db, 1e-2, |p| fwd(&x, &w, p));
    let (dx2, dw2, db2) = grads(2);
    check_doubles("linear dx", &dx, &dx2);
    check_doubles("linear dweight", &dw, &dw2);
    check_doubles("linear dbias", &db, &db2);
    let mut only_dx = vec![0.0; rows * fin];
    linear_backward(Some(&mut only_dx), None, None, &r, &x, &w, rows, fin, fout);
    check_same("linear dx alone", &dx, &only_dx);
    let mut only_db = vec![0.0; fout];
    linear_backward(None, None, Some(&mut only_db), &r, &x, &w, rows, fin, fout);
    check_same("linear dbias alone", &db, &only_db);
}

fn conv_case(s: Conv1dShape, seed: u64) {
    let mut rng = Rng::new(seed);
    let kin = s.in_channels / s.groups * s.kernel;
    let x = rng.vec(s.batch * s.in_channels * s.in_len, 1.0);
    let w = rng.vec(s.out_channels * kin, 0.5);
    let b = rng.vec(s.out_channels, 1.0);
    let n_out = s.batch * s.out_channels * s.out_len();
    let r = rng.vec(n_out, 1.0);
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut out = vec![0.0; n_out];
        conv1d_forward(&mut out, x, w, Some(b), &s);
        dot(&out, &r)
    };
    let grads = |n: usize| {
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        for _ in 0..n {
            conv1d_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &r, &x, &w, &s);
        }
        (dx, dw, db)
    };
    let (dx, dw, db) = grads(1);
    let tag = format!(
        "conv1d k{} s{} p{} g{}",
        s.kernel, s.stride, s.padding, s.groups
    );
    check(&format!("{tag} dx"), &x, &dx, 1e-2, |p| fwd(p, &w, &b));
    check(&format!("{tag} dweight"), &w, &dw, 1e-2, |p| fwd(&x, p, &b));
    check(&format!("{tag} dbias"), &b, &db, 1e-2, |p| fwd(&x, &w, p));
    let (dx2, dw2, db2) = grads(2);
    check_doubles("conv1d dx", &dx, &dx2);
    check_doubles("conv1d dweight", &dw, &dw2);
    check_doubles("conv1d dbias", &db, &db2);
    let mut only_dx = vec![0.0; x.len()];
    conv1d_backward(Some(&mut only_dx), None, None, &r, &x, &w, &s);
    check_same("conv1d dx alone", &dx, &only_dx);
    let mut only_dw = vec![0.0; w.len()];
    conv1d_backward(None, Some(&mut only_dw), None, &r, &x, &w, &s);
    check_same("conv1d dweight alone", &dw, &only_dw);
}

#[test]
fn conv1d_gradients() {
    let base = Conv1dShape {
        batch: 2,
        in_channels: 4,
        out_channels: 6,
        in_len: 37,
        kernel: 5,
        stride: 3,
        padding: 2,
        groups: 2,
    };
    conv_case(base, 2);
    // first MERT layer style: one input channel, k10 s5, no padding
    conv_case(
        Conv1dShape {
            in_channels: 1,
            out_channels: 3,
            kernel: 10,
            stride: 5,
            padding: 0,
            groups: 1,
            ..base
        },
        3,
    );
    // positional-conv style: even kernel, padding k/2, depthwise-ish groups
    conv_case(
        Conv1dShape {
            in_channels: 6,
            out_channels: 6,
            in_len: 13,
            kernel: 4,
            stride: 1,
            padding: 2,
            groups: 3,
            ..base
        },
        4,
    );
    // many input channels, short kernel: the tap-wise GEMM path (no im2col), with padding
    conv_case(
        Conv1dShape {
            batch: 2,
            in_channels: 32,
            out_channels: 5,
            in_len: 23,
            kernel: 3,
            stride: 2,
            padding: 1,
            groups: 1,
        },
        17,
    );
    conv_case(
        Conv1dShape {
            batch: 1,
            in_channels: 64,
            out_channels: 4,
            in_len: 11,
            kernel: 2,
            stride: 2,
            padding: 0,
            groups: 2,
        },
        18,
    );
    // 1x1 conv (no unfolding path)
    conv_case(
        Conv1dShape {
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            ..base
        },
        5,
    );
}

fn group_norm_case(batch: usize, channels: usize, len: usize, groups: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let n = batch * channels * len;
    let x: Vec<f32> = rng.vec(n, 2.0).iter().map(|v| v + 0.5).collect();
    let (w, b) = (rng.vec(channels, 1.5), rng.vec(channels, 1.0));
    let r = rng.vec(n, 1.0);
    let eps = 1e-5;
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut m, mut s) = (
            vec![0.0; n],
            vec![0.0; batch * groups],
            vec![0.0; batch * groups],
        );
        group_norm_forward(
            &mut out, &mut m, &mut s, x, w, b, batch, channels, len, groups, eps,
        );
        (dot(&out, &r), m, s)
    };
    let (_, mean, rstd) = fwd(&x, &w, &b);
    let grads = |n_calls: usize| {
        let (mut dx, mut dw, mut db) = (vec![0.0; n], vec![0.0; channels], vec![0.0; channels]);
        for _ in 0..n_calls {
            group_norm_backward(
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
                &r,
                &x,
                &w,
                &mean,
                &rstd,
                batch,
                channels,
                len,
                groups,
            );
        }
        (dx, dw, db)
    };
    let (dx, dw, db) = grads(1);
    let tag = format!("group_norm G{groups}");
    check(&format!("{tag} dx"), &x, &dx, 3e-3, |p| fwd(p, &w, &b).0);
    check(&format!("{tag} dweight"), &w, &dw, 1e-2, |p| {
        fwd(&x, p, &b).0
    });
    check(&format!("{tag} dbias"), &b, &db, 1e-2, |p| fwd(&x, &w, p).0);
    let (dx2, dw2, db2) = grads(2);
    check_doubles("group_norm dx", &dx, &dx2);
    check_doubles("group_norm dweight", &dw, &dw2);
    check_doubles("group_norm dbias", &db, &db2);
    let mut only_dw = vec![0.0; channels];
    group_norm_backward(
        None,
        Some(&mut only_dw),
        None,
        &r,
        &x,
        &w,
        &mean,
        &rstd,
        batch,
        channels,
        len,
        groups,
    );
    check_same("group_norm dweight alone", &dw, &only_dw);
    let mut only_dx = vec![0.0; n];
    group_norm_backward(
        Some(&mut only_dx),
        None,
        None,
        &r,
        &x,
        &w,
        &mean,
        &rstd,
        batch,
        channels,
        len,
        groups,
    );
    check_same("group_norm dx alone", &dx, &only_dx);
}

#[test]
fn group_norm_gradients() {
    group_norm_case(2, 6, 11, 3, 6);
    group_norm_case(2, 5, 9, 5, 7); // groups == channels, as in MERT's first conv layer
}

#[test]
fn layer_norm_gradients() {
    let (rows, cols) = (5, 37);
    let mut rng = Rng::new(8);
    let x: Vec<f32> = rng.vec(rows * cols, 2.0).iter().map(|v| v - 0.3).collect();
    let (w, b) = (rng.vec(cols, 1.5), rng.vec(cols, 1.0));
    let r = rng.vec(rows * cols, 1.0);
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut m, mut s) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        layer_norm_forward(&mut out, &mut m, &mut s, x, w, b, rows, cols, 1e-5);
        (dot(&out, &r), m, s)
    };
    let (_, mean, rstd) = fwd(&x, &w, &b);
    let grads = |n: usize| {
        let (mut dx, mut dw, mut db) = (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
        for _ in 0..n {
            layer_norm_backward(
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
                &r,
                &x,
                &w,
                &mean,
                &rstd,
                rows,
                cols,
            );
        }
        (dx, dw, db)
    };
    let (dx, dw, db) = grads(1);
    check("layer_norm dx", &x, &dx, 3e-3, |p| fwd(p, &w, &b).0);
    check("layer_norm dweight", &w, &dw, 1e-2, |p| fwd(&x, p, &b).0);
    check("layer_norm dbias", &b, &db, 1e-2, |p| fwd(&x, &w, p).0);
    let (dx2, dw2, db2) = grads(2);
    check_doubles("layer_norm dx", &dx, &dx2);
    check_doubles("layer_norm dweight", &dw, &dw2);
    check_doubles("layer_norm dbias", &db, &db2);
    let mut only_dx = vec![0.0; rows * cols];
    layer_norm_backward(
        Some(&mut only_dx),
        None,
        None,
        &r,
        &x,
        &w,
        &mean,
        &rstd,
        rows,
        cols,
    );
    check_same("layer_norm dx alone", &dx, &only_dx);
    let mut only_db = vec![0.0; cols];
    layer_norm_backward(
        None,
        None,
        Some(&mut only_db),
        &r,
        &x,
        &w,
        &mean,
        &rstd,
        rows,
        cols,
    );
    check_same("layer_norm dbias alone", &db, &only_db);
}

#[test]
fn gelu_gradients() {
    let mut rng = Rng::new(9);
    // spread over [-7, 7] including the far negative tail
    let x: Vec<f32> = rng.vec(301, 7.0);
    let r = rng.vec(x.len(), 1.0);
    let fwd = |x: &[f32]| {
        let mut out = vec![0.0; x.len()];
        gelu_forward(&mut out, x);
        dot(&out, &r)
    };
    let mut dx = vec![0.0; x.len()];
    gelu_backward(&mut dx, &r, &x);
    check("gelu dx", &x, &dx, 3e-3, fwd);
    let mut dx2 = vec![0.0; x.len()];
    gelu_backward(&mut dx2, &r, &x);
    gelu_backward(&mut dx2, &r, &x);
    check_doubles("gelu dx", &dx, &dx2);
}

fn attention_case(s: AttentionShape, key_valid: Option<&[u8]>, seed: u64) {
    let mut rng = Rng::new(seed);
    let n = s.batch * s.seq * s.heads * s.head_dim;
    let (q, k, v) = (rng.vec(n, 1.5), rng.vec(n, 1.5), rng.vec(n, 1.0));
    let r = rng.vec(n, 1.0);
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let n_lse = s.batch * s.heads * s.seq;
    let fwd = |q: &[f32], k: &[f32], v: &[f32]| {
        let (mut out, mut lse) = (vec![0.0; n], vec![0.0; n_lse]);
        attention_forward(&mut out, &mut lse, q, k, v, key_valid, &s, scale, None);
        (out, lse)
    };
    let (out, lse) = fwd(&q, &k, &v);
    let grads = |calls: usize| {
        let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for _ in 0..calls {
            attention_backward(
                &mut dq, &mut dk, &mut dv, &r, &q, &k, &v, &out, &lse, key_valid, &s, scale, None,
            );
        }
        (dq, dk, dv)
    };
    let (dq, dk, dv) = grads(1);
    let tag = format!(
        "attention T{} H{} D{} masked={}",
        s.seq,
        s.heads,
        s.head_dim,
        key_valid.is_some()
    );
    check(&format!("{tag} dq"), &q, &dq, 3e-3, |p| {
        dot(&fwd(p, &k, &v).0, &r)
    });
    check(&format!("{tag} dk"), &k, &dk, 3e-3, |p| {
        dot(&fwd(&q, p, &v).0, &r)
    });
    check(&format!("{tag} dv"), &v, &dv, 1e-2, |p| {
        dot(&fwd(&q, &k, p).0, &r)
    });
    let (dq2, dk2, dv2) = grads(2);
    check_doubles("attention dq", &dq, &dq2);
    check_doubles("attention dk", &dk, &dk2);
    check_doubles("attention dv", &dv, &dv2);
}

#[test]
fn attention_gradients() {
    let s = AttentionShape {
        batch: 2,
        seq: 9,
        heads: 3,
        head_dim: 5,
    };
    attention_case(s, None, 10);
    // batch 1: keys 6, 7, 8 masked (padding); batch 0: key 2 masked
    let mut valid = vec![1u8; 2 * 9];
    valid[2] = 0;
    valid[9 + 6..].fill(0);
    attention_case(s, Some(&valid), 11);
}

fn weight_norm_case(dims: [usize; 3], dim: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let total: usize = dims.iter().product();
    let v = rng.vec(total, 1.0);
    let g: Vec<f32> = rng.vec(dims[dim], 1.0).iter().map(|x| x + 1.5).collect();
    let r = rng.vec(total, 1.0);
    let fwd = |g: &[f32], v: &[f32]| {
        let (mut w, mut norms) = (vec![0.0; total], vec![0.0; dims[dim]]);
        weight_norm_forward(&mut w, &mut norms, g, v, dims, dim);
        (dot(&w, &r), norms)
    };
    let (_, norms) = fwd(&g, &v);
    let grads = |calls: usize| {
        let (mut dg, mut dv) = (vec![0.0; g.len()], vec![0.0; total]);
        for _ in 0..calls {
            weight_norm_backward(Some(&mut dg), Some(&mut dv), &r, &g, &v, &norms, dims, dim);
        }
        (dg, dv)
    };
    let (dg, dv) = grads(1);
    check(&format!("weight_norm dim{dim} dg"), &g, &dg, 1e-2, |p| {
        fwd(p, &v).0
    });
    check(&format!("weight_norm dim{dim} dv"), &v, &dv, 3e-3, |p| {
        fwd(&g, p).0
    });
    let (dg2, dv2) = grads(2);
    check_doubles("weight_norm dg", &dg, &dg2);
    check_doubles("weight_norm dv", &dv, &dv2);
    let mut only_dv = vec![0.0; total];
    weight_norm_backward(None, Some(&mut only_dv), &r, &g, &v, &norms, dims, dim);
    check_same("weight_norm dv alone", &dv, &only_dv);
    let mut only_dg = vec![0.0; g.len()];
    weight_norm_backward(Some(&mut only_dg), None, &r, &g, &v, &norms, dims, dim);
    check_same("weight_norm dg alone", &dg, &only_dg);
}

#[test]
fn weight_norm_gradients() {
    weight_norm_case([4, 3, 5], 0, 12);
    weight_norm_case([4, 3, 5], 2, 13);
    weight_norm_case([4, 3, 5], 1, 14);
}

#[test]
fn pooling_gradients() {
    let (batch, seq, channels) = (3, 7, 4);
    let lengths = [7, 3, 1];
    let mut rng = Rng::new(15);
    let x = rng.vec(batch * seq * channels, 1.0);
    let r = rng.vec(batch * channels, 1.0);
    let fwd = |x: &[f32]| {
        let mut out = vec![0.0; batch * channels];
        mean_pool_time_forward(&mut out, x, &lengths, batch, seq, channels);
        dot(&out, &r)
    };
    let mut dx = vec![0.0; x.len()];
    mean_pool_time_backward(&mut dx, &r, &lengths, batch, seq, channels);
    check("mean_pool_time dx", &x, &dx, 1e-2, fwd);
    let mut dx2 = vec![0.0; x.len()];
    mean_pool_time_backward(&mut dx2, &r, &lengths, batch, seq, channels);
    mean_pool_time_backward(&mut dx2, &r, &lengths, batch, seq, channels);
    check_doubles("mean_pool_time dx", &dx, &dx2);
}

#[test]
fn dropout_gradients() {
    let (p, seed) = (0.3, 42);
    let mut rng = Rng::new(16);
    let x = rng.vec(97, 1.0);
    let r = rng.vec(x.len(), 1.0);
    let fwd = |x: &[f32]| {
        let mut out = vec![0.0; x.len()];
        dropout_forward(&mut out, x, p, seed);
        dot(&out, &r)
    };
    let mut dx = vec![0.0; x.len()];
    dropout_backward(&mut dx, &r, p, seed);
    check("dropout dx", &x, &dx, 1e-2, fwd);
    let mut dx2 = vec![0.0; x.len()];
    dropout_backward(&mut dx2, &r, p, seed);
    dropout_backward(&mut dx2, &r, p, seed);
    check_doubles("dropout dx", &dx, &dx2);
}
