//! Attention-probability dropout in the CPU op (`ops::attention`, `AttentionDropout`), against three
//! independent truths: the no-dropout path (p = 0 must be bit-identical), central finite differences
//! of the op's own forward (p = 0.3, the mask fixed by the seed), and a naive f64 evaluation of
//! out = (P ∘ M / (1-p)) V with P and M materialised (M from `ops::dropout::dropout_keep` at the
//! documented counter ((b*H + h)*T + i)*T + j), including the backward written with
//! δ_i = Σ_j P_ij dP_ij (the op uses rowsum(dO ∘ O); the two are equal in exact arithmetic).

use culturemert_raw::ops::attention::{
    attention_backward, attention_forward, AttentionDropout, AttentionShape,
};
use culturemert_raw::ops::dropout::dropout_keep;

/// Deterministic uniform values in [-a, a) (the crate's splitmix64, 24-bit uniforms).
fn vals(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut rng = culturemert_raw::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| a * (2.0 * rng.uniform_f32() - 1.0))
        .collect()
}

struct Case {
    s: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    valid: Vec<u8>,
    scale: f32,
}

/// Ragged tiny shape; batch item b masks keys j with (j + 2b) % 4 == 0.
fn case(batch: usize, seq: usize, heads: usize, head_dim: usize, seed: u64) -> Case {
    let s = AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
    };
    let n = batch * seq * heads * head_dim;
    let valid = (0..batch * seq)
        .map(|i| u8::from(!(i % seq + 2 * (i / seq)).is_multiple_of(4)))
        .collect();
    Case {
        s,
        q: vals(n, seed, 1.5),
        k: vals(n, seed + 1, 1.5),
        v: vals(n, seed + 2, 1.0),
        valid,
        scale: 1.0 / (head_dim as f32).sqrt(),
    }
}

fn forward(c: &Case, q: &[f32], k: &[f32], v: &[f32], d: Option<AttentionDropout>) -> Vec<f32> {
    let s = &c.s;
    let mut out = vec![0.0; q.len()];
    let mut lse = vec![0.0; s.batch * s.heads * s.seq];
    attention_forward(&mut out, &mut lse, q, k, v, Some(&c.valid), s, c.scale, d);
    out
}

/// (out, lse, dq, dk, dv) for the cotangent `r`.
fn run(c: &Case, r: &[f32], d: Option<AttentionDropout>) -> [Vec<f32>; 5] {
    let s = &c.s;
    let n = c.q.len();
    let mut out = vec![0.0; n];
    let mut lse = vec![0.0; s.batch * s.heads * s.seq];
    attention_forward(
        &mut out,
        &mut lse,
        &c.q,
        &c.k,
        &c.v,
        Some(&c.valid),
        s,
        c.scale,
        d,
    );
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    attention_backward(
        &mut dq,
        &mut dk,
        &mut dv,
        r,
        &c.q,
        &c.k,
        &c.v,
        &out,
        &lse,
        Some(&c.valid),
        s,
        c.scale,
        d,
    );
    [out, lse, dq, dk, dv]
}

#[test]
fn p_zero_is_bit_identical_to_no_dropout() {
    let c = case(2, 13, 3, 5, 11);
    let r = vals(c.q.len(), 99, 1.0);
    let d = AttentionDropout { p: 0.0, seed: 42 };
    let with = run(&c, &r, Some(d));
    let without = run(&c, &r, None);
    for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
        .iter()
        .zip(with.iter().zip(&without))
    {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs with p = 0"
        );
    }
}

/// Central differences of L = <out, r> through the op's own f32 forward (accumulated in f64),
/// h = 1e-2; error measured relative to max |grad| of each input.
#[test]
fn gradients_match_finite_differences_with_p_0_3() {
    let c = case(2, 7, 2, 3, 5);
    let r = vals(c.q.len(), 77, 1.0);
    let d = AttentionDropout {
        p: 0.3,
        seed: 0xD0_0D,
    };
    let [_, _, dq, dk, dv] = run(&c, &r, Some(d));
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let out = forward(&c, q, k, v, Some(d));
        out.iter().zip(&r).map(|(&o, &g)| o as f64 * g as f64).sum()
    };
    let h = 1e-2f32;
    for (name, which, grad) in [("dq", 0, &dq), ("dk", 1, &dk), ("dv", 2, &dv)] {
        let mut err = 0.0f64;
        let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
        for e in 0..grad.len() {
            let eval = |delta: f32| {
                let mut x = [c.q.clone(), c.k.clone(), c.v.clone()];
                x[which][e] += delta;
                loss(&x[0], &x[1], &x[2])
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
            err = err.max((fd - grad[e] as f64).abs());
        }
        let rel = err / gmax;
        println!("{name}: max |fd - analytic| / max|grad| = {rel:.2e} (max|grad| {gmax:.3})");
        assert!(gmax > 0.1, "{name}: degenerate gradient");
        assert!(rel < 2e-4, "{name}: finite-difference error {rel:.2e}");
    }
}

/// Naive f64 attention with probability dropout: returns (out, dq, dk, dv) for cotangent `r`,
/// with M_ij from `dropout_keep` and δ_i = Σ_j P_ij dP_ij.
fn naive(c: &Case, r: &[f32], d: AttentionDropout) -> [Vec<f64>; 4] {
    let s = &c.s;
    let (t, hd, w) = (s.seq, s.head_dim, s.heads * s.head_dim);
    let keep_scale = 1.0 / (1.0 - d.p as f64);
    let n = c.q.len();
    let (mut out, mut dq, mut dk, mut dv) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let at =
        |x: &[f32], b: usize, i: usize, h: usize, e: usize| x[(b * t + i) * w + h * hd + e] as f64;
    let idx = |b: usize, i: usize, h: usize, e: usize| (b * t + i) * w + h * hd + e;
    for b in 0..s.batch {
        for h in 0..s.heads {
            let bh = b * s.heads + h;
            let mut p = vec![vec![0.0f64; t]; t];
            let mut m = vec![vec![0.0f64; t]; t];
            for i in 0..t {
                let sc: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..hd)
                            .map(|e| at(&c.q, b, i, h, e) * at(&c.k, b, j, h, e))
                            .sum::<f64>()
                            * c.scale as f64
                    })
                    .collect();
                let ok = |j: usize| c.valid[b * t + j] != 0;
                let mx = (0..t)
                    .filter(|&j| ok(j))
                    .map(|j| sc[j])
                    .fold(f64::MIN, f64::max);
                let z: f64 = (0..t).filter(|&j| ok(j)).map(|j| (sc[j] - mx).exp()).sum();
                for j in 0..t {
                    p[i][j] = if ok(j) { (sc[j] - mx).exp() / z } else { 0.0 };
                    let counter = ((bh * t + i) * t + j) as u64;
                    m[i][j] = if dropout_keep(d.seed, counter, d.p) {
                        keep_scale
                    } else {
                        0.0
                    };
                }
            }
            for i in 0..t {
                for e in 0..hd {
                    out[idx(b, i, h, e)] = (0..t)
                        .map(|j| p[i][j] * m[i][j] * at(&c.v, b, j, h, e))
                        .sum();
                }
                // dP_ij = M_ij (r_i . V_j); δ_i = Σ_j P_ij dP_ij; dS = P (dP - δ).
                let dp: Vec<f64> = (0..t)
                    .map(|j| {
                        m[i][j]
                            * (0..hd)
                                .map(|e| at(r, b, i, h, e) * at(&c.v, b, j, h, e))
                                .sum::<f64>()
                    })
                    .collect();
                let delta: f64 = (0..t).map(|j| p[i][j] * dp[j]).sum();
                for j in 0..t {
                    let ds = p[i][j] * (dp[j] - delta) * c.scale as f64;
                    for e in 0..hd {
                        dq[idx(b, i, h, e)] += ds * at(&c.k, b, j, h, e);
                        dk[idx(b, j, h, e)] += ds * at(&c.q, b, i, h, e);
                        dv[idx(b, j, h, e)] += p[i][j] * m[i][j] * at(r, b, i, h, e);
                    }
                }
            }
        }
    }
    [out, dq, dk, dv]
}

#[test]
fn forward_and_backward_match_naive_f64_formula() {
    let c = case(3, 19, 2, 6, 23);
    let r = vals(c.q.len(), 5, 1.0);
    let d = AttentionDropout {
        p: 0.25,
        seed: 0xBEEF,
    };
    let [out, _, dq, dk, dv] = run(&c, &r, Some(d));
    let want = naive(&c, &r, d);
    for (name, (got, want)) in ["out", "dq", "dk", "dv"]
        .iter()
        .zip([&out, &dq, &dk, &dv].into_iter().zip(&want))
    {
        let err = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f64::max);
        println!("{name}: max rel err vs f64 naive {err:.2e}");
        assert!(err < 1e-5, "{name}: {err:.2e}");
    }
    // The dropout must change the result (a mask that is all ones would pass the comparison above
    // only if the naive mask were too).
    let plain = run(&c, &r, None);
    assert!(out.iter().zip(&plain[0]).any(|(a, b)| (a - b).abs() > 1e-3));
}

/// Closed form: q = k = 0 gives P = 1/n_valid on valid keys; with V_j = e_j (D = T) the output is
/// out_ij = M_ij / ((1-p) n_valid) exactly, so the dropped fraction over 2 x 3 x 150 x 150 probabilities
/// must be p within 5 standard deviations, masked keys stay 0, and kept entries equal the closed form.
#[test]
fn dropped_fraction_is_p_and_kept_values_are_rescaled() {
    let (b, h, t) = (2, 3, 150);
    let s = AttentionShape {
        batch: b,
        seq: t,
        heads: h,
        head_dim: t,
    };
    let n = b * t * h * t;
    let zeros = vec![0.0f32; n];
    let mut v = vec![0.0f32; n];
    for bi in 0..b {
        for j in 0..t {
            for hi in 0..h {
                v[(bi * t + j) * h * t + hi * t + j] = 1.0;
            }
        }
    }
    let valid: Vec<u8> = (0..b * t).map(|i| u8::from(i % 7 != 3)).collect();
    let d = AttentionDropout { p: 0.1, seed: 2024 };
    let mut out = vec![0.0; n];
    let mut lse = vec![0.0; b * h * t];
    attention_forward(
        &mut out,
        &mut lse,
        &zeros,
        &zeros,
        &v,
        Some(&valid),
        &s,
        1.0,
        Some(d),
    );
    let (mut dropped, mut total) = (0usize, 0usize);
    for bi in 0..b {
        let n_valid = (0..t).filter(|&j| valid[bi * t + j] != 0).count();
        let kept_value = 1.0 / ((1.0 - d.p as f64) * n_valid as f64);
        for i in 0..t {
            for hi in 0..h {
                for j in 0..t {
                    let o = out[(bi * t + i) * h * t + hi * t + j] as f64;
                    if valid[bi * t + j] == 0 {
                        assert_eq!(o, 0.0, "masked key got probability");
                        continue;
                    }
                    total += 1;
                    if o == 0.0 {
                        dropped += 1;
                    } else {
                        assert!(
                            (o - kept_value).abs() < 1e-6 * kept_value,
                            "kept {o} vs {kept_value}"
                        );
                    }
                }
            }
            // lse is the undropped normaliser: log n_valid for all-zero scores.
            let l = lse[(bi * h) * t + i] as f64;
            assert!((l - (n_valid as f64).ln()).abs() < 1e-5, "lse {l}");
        }
    }
    let frac = dropped as f64 / total as f64;
    let sigma = (d.p as f64 * (1.0 - d.p as f64) / total as f64).sqrt();
    println!(
        "dropped fraction {frac:.5} of {total} (p = {}, sigma {sigma:.5})",
        d.p
    );
    assert!(
        (frac - d.p as f64).abs() < 5.0 * sigma,
        "dropped fraction {frac}"
    );
}

/// The autograd wrapper passes the same dropout to the forward and to the recorded backward: tape
/// gradients of <out, r> equal the op's backward bit for bit, and an invalid p is an error.
#[test]
fn autograd_attention_uses_the_dropout_in_both_passes() {
    use culturemert_raw::autograd::{nn, ParamStore, Tape};
    use culturemert_raw::tensor::Tensor;
    let c = case(2, 9, 2, 4, 31);
    let r = vals(c.q.len(), 8, 1.0);
    let d = AttentionDropout { p: 0.4, seed: 17 };
    let [want_out, _, want_dq, want_dk, want_dv] = run(&c, &r, Some(d));
    let shape = [c.s.batch, c.s.seq, c.s.heads * c.s.head_dim];
    let mut tape = Tape::new();
    let q = tape.leaf(Tensor::from_f32(&shape, c.q.clone()));
    let k = tape.leaf(Tensor::from_f32(&shape, c.k.clone()));
    let v = tape.leaf(Tensor::from_f32(&shape, c.v.clone()));
    let out = nn::attention(&mut tape, &q, &k, &v, 2, Some(&c.valid), c.scale, Some(d)).unwrap();
    assert_eq!(out.data(), &want_out[..], "forward");
    let grads = tape
        .backward(vec![(&out, r.clone())], &mut ParamStore::new())
        .unwrap();
    for (name, var, want) in [
        ("dq", &q, &want_dq),
        ("dk", &k, &want_dk),
        ("dv", &v, &want_dv),
    ] {
        assert_eq!(grads.grad_of(var).unwrap(), &want[..], "{name}");
    }
    let mut tape = Tape::new();
    let bad = AttentionDropout { p: 1.5, seed: 0 };
    let x = tape.constant(Tensor::from_f32(&shape, c.q.clone()));
    assert!(nn::attention(&mut tape, &x, &x, &x, 2, None, 1.0, Some(bad)).is_err());
}
