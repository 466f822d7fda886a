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

use culturemert_raw::cuda::attention_tc::attention_tc_forward;
use culturemert_raw::cuda::tensor_core::HalfKind;
use culturemert_raw::device::{CudaDevice, Schedule};
use culturemert_raw::ops::attention::{attention_forward, AttentionDropout, AttentionShape};
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
    for order in ORDERS {
        let dev = CudaDevice::emulated_with(order);
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
        // no key_valid buffer semantics checked by the case below.
        Case {
            seq: 70,
            masked: Some(|b, j| b == 0 && j < 64),
            dropout: Some(AttentionDropout { p: 0.2, seed: 7 }),
        },
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
    let dev = CudaDevice::emulated_with(Schedule::Forward);
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
