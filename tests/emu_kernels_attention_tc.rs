//! Tensor-core attention (kernels/attention_tc.cu) on the host emulator, bf16 and f16, under two
//! scheduling orders, against the f32 CPU op `ops::attention` run on the SAME half-rounded q, k, v
//! (widened back to f32), on ragged shapes (T = 37, 70: not multiples of the 16-row mma tiles or the
//! 64-key tiles), H = 3, D = 64, with masked key ranges (one spanning the key-tile boundary, one
//! covering the whole first key tile), a fully masked batch item and probability dropout.
//!
//! Error model of the forward. The kernel rounds each probability p_ij (dropout-scaled) to half
//! before O += P·V; everything else is f32 (S = Q Kᵀ from exact half products, softmax, sums). With
//! p̂ = p (1 + δ), |δ| <= u (unit roundoff: bf16 u = 2^-8, f16 u = 2^-11), the output error is
//! |Σ_j p_ij δ_ij v_jd| / l_i <= u · a_id with a_id = Σ_j P_ij c |V_jd| (P normalised, c the dropout
//! scale). f16 has no exponent range below 2^-14: subnormal p lose up to 2^-25 absolutely, at most
//! T · 2^-25 · max|V| in total. The f32 remainder (scores in another summation order, __expf vs the
//! CPU exp, sums over T keys) is bounded by 4 (T + D) eps · a_id as in tests/emu_kernels_model.rs.
//! Tolerance: |got - want| <= (u + 4 (T + D) eps) a_id + T 2^-25 max|V|; lse (no half rounding in
//! it): |Δ| <= 4 (T + D) eps max(1, |lse|); out = 0 and lse = -inf exactly for rows with no valid key.
//!
//! Backward (dq, dk, dv accumulated onto non-zero values; the kernels get the CPU's out and lse so
//! only the backward is under test; dO is drawn already half-representable, so the kernel's rounding
//! of dO is exact). The half roundings are P̃ = P M c before dV = P̃ᵀ dO and dS before dQ = scale dS K
//! and dK = scale dSᵀ Q, so |err| <= u · a_half + 4 (T + D) eps · a_f32 + T 2^-25 max|X| + 2 eps |want|
//! with a_half = Σ |P̃| |dO| (dv), scale Σ |dS| |K| (dq), scale Σ |dS| |Q| (dk) and a_f32 the same with
//! |dS| replaced by P (|dP| + |δ|) (the f32 error of dS = P (dP - δ) before any rounding).

use culturemert_raw::cuda::attention_tc::{attention_tc_backward, attention_tc_forward};
use culturemert_raw::cuda::tensor_core::HalfKind;
use culturemert_raw::device::Schedule;
use culturemert_raw::ops::attention::{
    attention_backward, attention_forward, AttentionDropout, AttentionShape,
};
use culturemert_raw::ops::dropout::dropout_keep;
use half::{bf16, f16};

mod common;
use common::random;

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];
const KINDS: [HalfKind; 2] = [HalfKind::Bf16, HalfKind::F16];
const D: usize = 64;
const H: usize = 3;

fn to_bits(kind: HalfKind, v: f32) -> u16 {
    match kind {
        HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
        HalfKind::F16 => f16::from_f32(v).to_bits(),
    }
}

fn from_bits(kind: HalfKind, b: u16) -> f32 {
    match kind {
        HalfKind::Bf16 => bf16::from_bits(b).to_f32(),
        HalfKind::F16 => f16::from_bits(b).to_f32(),
    }
}

/// Unit roundoff of the half format (round to nearest, 8 or 11 significant bits).
fn unit_roundoff(kind: HalfKind) -> f64 {
    match kind {
        HalfKind::Bf16 => 2f64.powi(-8),
        HalfKind::F16 => 2f64.powi(-11),
    }
}

/// Rounded half bits and their f32 values.
fn halves(kind: HalfKind, n: usize, seed: u64, lo: f32, hi: f32) -> (Vec<u16>, Vec<f32>) {
    let bits: Vec<u16> = random(n, seed, lo, hi)
        .iter()
        .map(|&x| to_bits(kind, x))
        .collect();
    let vals = bits.iter().map(|&b| from_bits(kind, b)).collect();
    (bits, vals)
}

/// Keys of item b masked when `masked(b, j)`.
struct Case {
    seq: usize,
    masked: Option<fn(usize, usize) -> bool>,
    dropout: Option<AttentionDropout>,
}

struct Inputs {
    s: AttentionShape,
    bits: [Vec<u16>; 3],
    vals: [Vec<f32>; 3],
    valid: Option<Vec<u8>>,
    scale: f32,
}

fn inputs(kind: HalfKind, c: &Case) -> Inputs {
    let s = AttentionShape {
        batch: 2,
        seq: c.seq,
        heads: H,
        head_dim: D,
    };
    let n = 2 * c.seq * H * D;
    let (qb, qv) = halves(kind, n, 11, -2.0, 2.0);
    let (kb, kv) = halves(kind, n, 12, -2.0, 2.0);
    let (vb, vv) = halves(kind, n, 13, -1.0, 1.5);
    let valid = c.masked.map(|m| {
        (0..2 * c.seq)
            .map(|i| u8::from(!m(i / c.seq, i % c.seq)))
            .collect()
    });
    Inputs {
        s,
        bits: [qb, kb, vb],
        vals: [qv, kv, vv],
        valid,
        scale: 1.0 / (D as f32).sqrt(),
    }
}

/// a[b, i, h, d] = Σ_j P_ij c |V_jd| with P = exp(S - lse) from the CPU's lse (0 for masked keys).
fn abs_weighted_v(inp: &Inputs, lse: &[f32], c: f64) -> Vec<f64> {
    let (t, w) = (inp.s.seq, H * D);
    let [q, k, v] = &inp.vals;
    let mut a = vec![0.0f64; q.len()];
    for b in 0..2 {
        for h in 0..H {
            for i in 0..t {
                let l = lse[(b * H + h) * t + i] as f64;
                if l == f64::NEG_INFINITY {
                    continue;
                }
                let qi = &q[(b * t + i) * w + h * D..][..D];
                for j in 0..t {
                    if inp.valid.as_ref().is_some_and(|m| m[b * t + j] == 0) {
                        continue;
                    }
                    let kj = &k[(b * t + j) * w + h * D..][..D];
                    let sij: f64 = qi.iter().zip(kj).map(|(&x, &y)| x as f64 * y as f64).sum();
                    let p = (sij * inp.scale as f64 - l).exp() * c;
                    let vj = &v[(b * t + j) * w + h * D..][..D];
                    let ai = &mut a[(b * t + i) * w + h * D..][..D];
                    for (x, &y) in ai.iter_mut().zip(vj) {
                        *x += p * (y as f64).abs();
                    }
                }
            }
        }
    }
    a
}

/// Runs one forward case for `kind` under both orders; returns the worst |err| / (u a) of out.
fn forward_case(kind: HalfKind, c: &Case) -> f64 {
    let inp = inputs(kind, c);
    let (s, [q, k, v]) = (&inp.s, &inp.vals);
    let (n, rows) = (q.len(), 2 * H * c.seq);
    let mut out = vec![0.0f32; n];
    let mut lse = vec![0.0f32; rows];
    let valid = inp.valid.as_deref();
    attention_forward(&mut out, &mut lse, q, k, v, valid, s, inp.scale, c.dropout);
    let drop_c = c.dropout.map_or(1.0, |d| d.scale() as f64);
    let a = abs_weighted_v(&inp, &lse, drop_c);
    let u = unit_roundoff(kind);
    let f32_rel = 4.0 * (c.seq + D) as f64 * f32::EPSILON as f64;
    let max_v = v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let subnormal_abs = c.seq as f64 * 2f64.powi(-25) * max_v;

    let mut worst = 0.0f64;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let [gq, gk, gv] = inp.bits.each_ref().map(|x| dev.htod(x).unwrap());
        let gvalid = inp.valid.as_ref().map(|m| dev.htod(m).unwrap());
        let mut gout = dev.htod(&vec![f32::NAN; n]).unwrap();
        let mut glse = dev.htod(&vec![f32::NAN; rows]).unwrap();
        attention_tc_forward(
            &dev,
            kind,
            &mut gout,
            &mut glse,
            &gq,
            &gk,
            &gv,
            gvalid.as_ref(),
            s,
            inp.scale,
            c.dropout,
        )
        .unwrap();
        let (got, got_lse) = (dev.dtoh(&gout).unwrap(), dev.dtoh(&glse).unwrap());
        let tag = format!("{kind:?} T{} {order:?} dropout {:?}", c.seq, c.dropout);
        for (idx, (&g, &w)) in got.iter().zip(&out).enumerate() {
            let err = (g as f64 - w as f64).abs();
            let tol = (u + f32_rel) * a[idx] + subnormal_abs;
            assert!(
                err <= tol,
                "{tag}: out[{idx}] = {g}, want {w}: err {err:.3e} > tol {tol:.3e}"
            );
            if a[idx] > 0.0 {
                worst = worst.max(err / (u * a[idx]));
            } else {
                assert_eq!(g, 0.0, "{tag}: out[{idx}] of a row without valid key");
            }
        }
        for (r, (&g, &w)) in got_lse.iter().zip(&lse).enumerate() {
            if w == f32::NEG_INFINITY {
                assert_eq!(g, w, "{tag}: lse[{r}] of a row without valid key");
                continue;
            }
            let err = (g as f64 - w as f64).abs();
            let tol = f32_rel * (w.abs() as f64).max(1.0);
            assert!(err <= tol, "{tag}: lse[{r}] = {g}, want {w}: err {err:.3e}");
        }
    }
    println!("{kind:?} T{}: worst out err / (u a) = {worst:.3}", c.seq);
    worst
}

/// The error scales of the backward (see the header) for dq, dk, dv: (a_half, a_f32) each.
struct BackwardScales {
    half: [Vec<f64>; 3],
    f32: [Vec<f64>; 3],
}

fn backward_scales(
    inp: &Inputs,
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    dropout: Option<AttentionDropout>,
) -> BackwardScales {
    let (t, w, sc) = (inp.s.seq, H * D, inp.scale as f64);
    let [q, k, v] = &inp.vals;
    let n = q.len();
    let z = || [vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]];
    let (mut half, mut full) = (z(), z());
    let row = |x: &[f32], b: usize, i: usize, h: usize| -> Vec<f64> {
        x[(b * t + i) * w + h * D..][..D]
            .iter()
            .map(|&y| y as f64)
            .collect()
    };
    for b in 0..2 {
        for h in 0..H {
            let bh = b * H + h;
            for i in 0..t {
                let l = lse[bh * t + i] as f64;
                if l == f64::NEG_INFINITY {
                    continue;
                }
                let (qi, doi, oi) = (row(q, b, i, h), row(dout, b, i, h), row(out, b, i, h));
                let delta: f64 = doi.iter().zip(&oi).map(|(a, b)| a * b).sum();
                for j in 0..t {
                    if inp.valid.as_ref().is_some_and(|m| m[b * t + j] == 0) {
                        continue;
                    }
                    let (kj, vj) = (row(k, b, j, h), row(v, b, j, h));
                    let s: f64 = qi.iter().zip(&kj).map(|(a, b)| a * b).sum();
                    let p = (s * sc - l).exp();
                    let c = dropout.map_or(1.0, |d| {
                        let keep = dropout_keep(d.seed, ((bh * t + i) * t + j) as u64, d.p);
                        if keep {
                            d.scale() as f64
                        } else {
                            0.0
                        }
                    });
                    let dp: f64 = doi.iter().zip(&vj).map(|(a, b)| a * b).sum();
                    let dp_abs: f64 = doi.iter().zip(&vj).map(|(a, b)| (a * b).abs()).sum();
                    let ds = (p * (c * dp - delta)).abs();
                    let ds_f32 = p * (c * dp_abs + delta.abs());
                    let (ii, jj) = ((b * t + i) * w + h * D, (b * t + j) * w + h * D);
                    for d in 0..D {
                        // dq: row i over keys j; dk: row j over queries i; dv: row j.
                        half[0][ii + d] += sc * ds * kj[d].abs();
                        full[0][ii + d] += sc * ds_f32 * kj[d].abs();
                        half[1][jj + d] += sc * ds * qi[d].abs();
                        full[1][jj + d] += sc * ds_f32 * qi[d].abs();
                        half[2][jj + d] += p * c * doi[d].abs();
                        full[2][jj + d] += p * c * doi[d].abs();
                    }
                }
            }
        }
    }
    BackwardScales { half, f32: full }
}

/// One backward case for `kind` under both orders; returns the worst |err| / (u a_half) of dq, dk, dv.
fn backward_case(kind: HalfKind, c: &Case) -> f64 {
    let inp = inputs(kind, c);
    let (s, [q, k, v]) = (&inp.s, &inp.vals);
    let (n, rows) = (q.len(), 2 * H * c.seq);
    let (_, dout) = halves(kind, n, 14, -1.0, 1.0); // half-representable f32
    let valid = inp.valid.as_deref();
    let mut out = vec![0.0f32; n];
    let mut lse = vec![0.0f32; rows];
    attention_forward(&mut out, &mut lse, q, k, v, valid, s, inp.scale, c.dropout);
    let init = [
        random(n, 15, -1.0, 1.0),
        random(n, 16, -1.0, 1.0),
        random(n, 17, -1.0, 1.0),
    ];
    let [mut dq, mut dk, mut dv] = init.clone();
    attention_backward(
        &mut dq, &mut dk, &mut dv, &dout, q, k, v, &out, &lse, valid, s, inp.scale, c.dropout,
    );
    let scales = backward_scales(&inp, &dout, &out, &lse, c.dropout);
    let u = unit_roundoff(kind);
    let f32_rel = 4.0 * (c.seq + D) as f64 * f32::EPSILON as f64;
    let max_x = [q, k, &dout]
        .iter()
        .flat_map(|x| x.iter())
        .fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let subnormal_abs = c.seq as f64 * 2f64.powi(-25) * max_x;
    let want = [dq, dk, dv];

    let mut worst = 0.0f64;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let [gq, gk, gv] = inp.bits.each_ref().map(|x| dev.htod(x).unwrap());
        let gvalid = inp.valid.as_ref().map(|m| dev.htod(m).unwrap());
        let (gdout, gout, glse) = (
            dev.htod(&dout).unwrap(),
            dev.htod(&out).unwrap(),
            dev.htod(&lse).unwrap(),
        );
        let [mut gdq, mut gdk, mut gdv] = init.each_ref().map(|x| dev.htod(x).unwrap());
        let mut delta = dev.htod(&vec![f32::NAN; rows]).unwrap();
        attention_tc_backward(
            &dev,
            kind,
            &mut gdq,
            &mut gdk,
            &mut gdv,
            &mut delta,
            &gdout,
            &gq,
            &gk,
            &gv,
            &gout,
            &glse,
            gvalid.as_ref(),
            s,
            inp.scale,
            c.dropout,
        )
        .unwrap();
        let got = [&gdq, &gdk, &gdv].map(|x| dev.dtoh(x).unwrap());
        for (name, g) in ["dq", "dk", "dv"].iter().enumerate() {
            let tag = format!("{kind:?} T{} {order:?} dropout {:?} {g}", c.seq, c.dropout);
            for idx in 0..n {
                let (gv, wv) = (got[name][idx] as f64, want[name][idx] as f64);
                let (ah, af) = (scales.half[name][idx], scales.f32[name][idx]);
                let err = (gv - wv).abs();
                let tol =
                    u * ah + f32_rel * af + subnormal_abs + 2.0 * f32::EPSILON as f64 * wv.abs();
                assert!(
                    err <= tol,
                    "{tag}[{idx}] = {gv}, want {wv}: err {err:.3e} > tol {tol:.3e}"
                );
                if ah > 0.0 {
                    worst = worst.max(err / (u * ah));
                }
            }
        }
    }
    println!(
        "{kind:?} T{} backward: worst err / (u a_half) = {worst:.3}",
        c.seq
    );
    worst
}

fn all_backward_cases(kind: HalfKind) {
    let cases = [
        Case {
            seq: 70,
            masked: Some(|b, j| b == 1 || (20..67).contains(&j)),
            dropout: None,
        },
        Case {
            seq: 37,
            masked: Some(|b, j| b == 0 && j >= 30),
            dropout: Some(AttentionDropout { p: 0.2, seed: 9 }),
        },
    ];
    let worst = cases
        .iter()
        .map(|c| backward_case(kind, c))
        .fold(0.0, f64::max);
    println!("{kind:?}: worst backward err / (u a_half) over all cases = {worst:.3}");
}

#[test]
fn attention_tc_backward_bf16_matches_cpu_on_rounded_inputs() {
    all_backward_cases(HalfKind::Bf16);
}

#[test]
fn attention_tc_backward_f16_matches_cpu_on_rounded_inputs() {
    all_backward_cases(HalfKind::F16);
}

fn all_forward_cases(kind: HalfKind) {
    let cases = [
        // Tail keys of item 0 masked, item 1 unmasked.
        Case {
            seq: 37,
            masked: Some(|b, j| b == 0 && j >= 30),
            dropout: None,
        },
        // A range across the key-tile boundary on item 0, item 1 fully masked.
        Case {
            seq: 70,
            masked: Some(|b, j| b == 1 || (20..67).contains(&j)),
            dropout: None,
        },
        // The whole first key tile of item 0 masked (a tile with no valid key before valid ones),
        // with probability dropout.
        Case {
            seq: 70,
            masked: Some(|b, j| b == 0 && j < 64),
            dropout: Some(AttentionDropout { p: 0.2, seed: 7 }),
        },
        // No key_valid buffer at all.
        Case {
            seq: 37,
            masked: None,
            dropout: None,
        },
    ];
    let worst = cases
        .iter()
        .map(|c| forward_case(kind, c))
        .fold(0.0, f64::max);
    println!("{kind:?}: worst out err / (u a) over all cases = {worst:.3}");
}

#[test]
fn attention_tc_forward_bf16_matches_cpu_on_rounded_inputs() {
    all_forward_cases(HalfKind::Bf16);
}

#[test]
fn attention_tc_forward_f16_matches_cpu_on_rounded_inputs() {
    all_forward_cases(HalfKind::F16);
}

#[test]
fn attention_tc_rejects_other_head_dims() {
    let dev = common::device(Schedule::Forward);
    let s = AttentionShape {
        batch: 1,
        seq: 5,
        heads: 2,
        head_dim: 32,
    };
    let n = 5 * 2 * 32;
    let x = dev.htod(&vec![0u16; n]).unwrap();
    let mut out = dev.alloc::<f32>(n).unwrap();
    let mut lse = dev.alloc::<f32>(10).unwrap();
    for kind in KINDS {
        let err = attention_tc_forward(
            &dev, kind, &mut out, &mut lse, &x, &x, &x, None, &s, 1.0, None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("head_dim 32"), "{err}");
    }
}
