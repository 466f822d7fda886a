//! Forward correctness of the CPU ops (src/ops) against independent naive f64 implementations
//! (direct loops), closed forms, and published constants (mpmath, 40 digits). Tolerances are stated
//! per test; each prints its measured max error.
#![allow(clippy::excessive_precision)] // constants quoted as mpmath printed them

use culturemert_raw::ops::attention::{attention_forward, AttentionShape};
use culturemert_raw::ops::conv1d::{conv1d_forward, Conv1dShape};
use culturemert_raw::ops::dropout::{
    dropout_backward, dropout_forward, dropout_hash, dropout_keep,
};
use culturemert_raw::ops::elementwise::{
    accumulate, accumulate_scaled, add_forward, scale_forward, transpose_last2,
};
use culturemert_raw::ops::fastmath::{exp_f32, exp_f64};
use culturemert_raw::ops::gelu::{erf, erf_f64, erfc_f64, gelu_backward, gelu_forward};
use culturemert_raw::ops::gemm::{sgemm, sgemm_strided, MatRef};
use culturemert_raw::ops::group_norm::group_norm_forward;
use culturemert_raw::ops::layer_norm::layer_norm_forward;
use culturemert_raw::ops::linear::linear_forward;
use culturemert_raw::ops::pooling::mean_pool_time_forward;
use culturemert_raw::ops::weight_norm::weight_norm_forward;

/// Deterministic test data (the crate's splitmix64 -> uniform in [-1, 1)).
struct Rng(culturemert_raw::rng::SplitMix64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(culturemert_raw::rng::SplitMix64::new(seed))
    }
    fn next(&mut self) -> f32 {
        self.0.uniform_f32() * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// max |a - b| / (1 + |b|), asserted <= tol.
fn compare(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut worst: f64 = 0.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / (1.0 + w.abs());
        assert!(
            err <= tol,
            "{name}[{i}]: {g} vs {w} (err {err:.3e} > {tol:.0e})"
        );
        worst = worst.max(err);
    }
    println!(
        "{name}: {} values, max |got - want|/(1+|want|) = {worst:.2e} (tol {tol:.0e})",
        got.len()
    );
}

/// Naive f64 C = op(A) op(B) (+ C0).
#[allow(clippy::too_many_arguments)]
fn naive_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    at: bool,
    b: &[f32],
    bt: bool,
    c0: Option<&[f32]>,
) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = c0.map_or(0.0, |c0| c0[i * n + j] as f64);
            for p in 0..k {
                let av = if at { a[p * m + i] } else { a[i * k + p] };
                let bv = if bt { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s;
        }
    }
    c
}

#[test]
fn sgemm_matches_naive() {
    let mut rng = Rng::new(1);
    // 13x11x7 runs single-threaded; 70x81x93 (> 2^18 MACs) takes the rayon path.
    for &(m, n, k) in &[(13, 11, 7), (70, 81, 93), (1, 5, 3), (6, 1, 300)] {
        for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a, b, c0) = (
                rng.vec(m * k, 1.0),
                rng.vec(k * n, 1.0),
                rng.vec(m * n, 1.0),
            );
            let mut c = vec![f32::NAN; m * n];
            sgemm(m, n, k, &a, at, &b, bt, &mut c, false);
            compare(
                &format!("sgemm {m}x{n}x{k} at={at} bt={bt}"),
                &c,
                &naive_gemm(m, n, k, &a, at, &b, bt, None),
                1e-5,
            );
            let mut c = c0.clone();
            sgemm(m, n, k, &a, at, &b, bt, &mut c, true);
            compare(
                "sgemm accumulate",
                &c,
                &naive_gemm(m, n, k, &a, at, &b, bt, Some(&c0)),
                1e-5,
            );
        }
    }
    // k = 0: C = 0 (overwrite) or unchanged (accumulate)
    let mut c = vec![3.0f32; 6];
    sgemm(2, 3, 0, &[], false, &[], false, &mut c, true);
    assert_eq!(c, vec![3.0; 6]);
    sgemm(2, 3, 0, &[], false, &[], false, &mut c, false);
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn sgemm_strided_matches_naive() {
    // C block (rows 5, cols 4) at stride 9 inside a larger buffer, alpha = 0.5; the rest untouched.
    let mut rng = Rng::new(2);
    let (m, n, k) = (5, 4, 6);
    let a = rng.vec(m * 10, 1.0); // A[i,p] = a[i*10 + p]
    let b = rng.vec(k * n, 1.0);
    let mut c = vec![7.0f32; m * 9];
    sgemm_strided(
        m,
        n,
        k,
        0.5,
        MatRef {
            data: &a,
            row_stride: 10,
            col_stride: 1,
        },
        MatRef {
            data: &b,
            row_stride: n,
            col_stride: 1,
        },
        &mut c,
        9,
        1,
        true,
        false,
    );
    for i in 0..m {
        for j in 0..9 {
            let want = if j < n {
                7.0 + 0.5
                    * (0..k)
                        .map(|p| a[i * 10 + p] as f64 * b[p * n + j] as f64)
                        .sum::<f64>()
            } else {
                7.0
            };
            assert!(
                (c[i * 9 + j] as f64 - want).abs() < 1e-5,
                "strided C[{i},{j}]"
            );
        }
    }
}

#[test]
fn linear_matches_naive() {
    let mut rng = Rng::new(3);
    let (rows, fin, fout) = (9, 13, 6);
    let (x, w, b) = (
        rng.vec(rows * fin, 1.0),
        rng.vec(fout * fin, 1.0),
        rng.vec(fout, 1.0),
    );
    let mut want = naive_gemm(rows, fout, fin, &x, false, &w, true, None);
    let mut out = vec![f32::NAN; rows * fout];
    linear_forward(&mut out, &x, &w, None, rows, fin, fout);
    compare("linear (no bias)", &out, &want, 1e-5);
    for (i, v) in want.iter_mut().enumerate() {
        *v += b[i % fout] as f64;
    }
    linear_forward(&mut out, &x, &w, Some(&b), rows, fin, fout);
    compare("linear (bias)", &out, &want, 1e-5);
}

fn naive_conv(x: &[f32], w: &[f32], b: &[f32], s: &Conv1dShape) -> Vec<f64> {
    let lout = (s.in_len + 2 * s.padding - s.kernel) / s.stride + 1;
    let (cin_g, cout_g) = (s.in_channels / s.groups, s.out_channels / s.groups);
    let mut out = vec![0.0; s.batch * s.out_channels * lout];
    for bi in 0..s.batch {
        for co in 0..s.out_channels {
            let g = co / cout_g;
            for t in 0..lout {
                let mut acc = b[co] as f64;
                for ci in 0..cin_g {
                    for kk in 0..s.kernel {
                        let pos = (t * s.stride + kk) as isize - s.padding as isize;
                        if pos >= 0 && (pos as usize) < s.in_len {
                            let xv =
                                x[(bi * s.in_channels + g * cin_g + ci) * s.in_len + pos as usize];
                            acc += xv as f64 * w[(co * cin_g + ci) * s.kernel + kk] as f64;
                        }
                    }
                }
                out[(bi * s.out_channels + co) * lout + t] = acc;
            }
        }
    }
    out
}

#[test]
fn conv1d_matches_direct_loops() {
    let mut rng = Rng::new(4);
    let base = Conv1dShape {
        batch: 2,
        in_channels: 6,
        out_channels: 9,
        in_len: 37,
        kernel: 5,
        stride: 3,
        padding: 2,
        groups: 3,
    };
    let cases = [
        base,
        Conv1dShape {
            in_channels: 1,
            out_channels: 8,
            in_len: 103,
            kernel: 10,
            stride: 5,
            padding: 0,
            groups: 1,
            ..base
        },
        Conv1dShape {
            in_channels: 8,
            out_channels: 8,
            in_len: 29,
            kernel: 8,
            stride: 1,
            padding: 4,
            groups: 4,
            ..base
        },
        Conv1dShape {
            in_channels: 5,
            out_channels: 7,
            in_len: 21,
            kernel: 2,
            stride: 2,
            padding: 0,
            groups: 1,
            ..base
        },
        Conv1dShape {
            in_channels: 5,
            out_channels: 7,
            in_len: 21,
            kernel: 1,
            stride: 1,
            padding: 0,
            groups: 1,
            ..base
        },
        // tap-wise GEMM path (cin/groups >= 32, kernel <= 8), with and without padding
        Conv1dShape {
            batch: 2,
            in_channels: 64,
            out_channels: 10,
            in_len: 31,
            kernel: 3,
            stride: 2,
            padding: 2,
            groups: 2,
        },
        Conv1dShape {
            batch: 1,
            in_channels: 40,
            out_channels: 6,
            in_len: 9,
            kernel: 8,
            stride: 3,
            padding: 7,
            groups: 1,
        },
        // large enough for the threaded sgemm paths
        Conv1dShape {
            batch: 1,
            in_channels: 24,
            out_channels: 48,
            in_len: 301,
            kernel: 3,
            stride: 2,
            padding: 1,
            groups: 1,
        },
        Conv1dShape {
            batch: 1,
            in_channels: 64,
            out_channels: 48,
            in_len: 301,
            kernel: 3,
            stride: 2,
            padding: 0,
            groups: 1,
        },
    ];
    for s in cases {
        let x = rng.vec(s.batch * s.in_channels * s.in_len, 1.0);
        let w = rng.vec(s.out_channels * s.in_channels / s.groups * s.kernel, 1.0);
        let b = rng.vec(s.out_channels, 1.0);
        let mut out = vec![f32::NAN; s.batch * s.out_channels * s.out_len()];
        conv1d_forward(&mut out, &x, &w, Some(&b), &s);
        let tag = format!(
            "conv1d Cin{} Cout{} k{} s{} p{} g{}",
            s.in_channels, s.out_channels, s.kernel, s.stride, s.padding, s.groups
        );
        compare(&tag, &out, &naive_conv(&x, &w, &b, &s), 1e-5);
        let zero = vec![0.0; s.out_channels];
        conv1d_forward(&mut out, &x, &w, None, &s);
        compare(
            &format!("{tag} no bias"),
            &out,
            &naive_conv(&x, &w, &zero, &s),
            1e-5,
        );
    }
}

#[test]
fn layer_norm_closed_form_and_naive() {
    let (rows, cols, eps) = (7, 45, 1e-5f32);
    let mut rng = Rng::new(5);
    let x: Vec<f32> = rng.vec(rows * cols, 3.0).iter().map(|v| v + 2.0).collect();
    let (w, b) = (rng.vec(cols, 1.0), rng.vec(cols, 1.0));
    let (mut out, mut mean, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
    // weight 1, bias 0: each row has mean 0 and (biased) variance var/(var+eps) ≈ 1
    layer_norm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        &x,
        &vec![1.0; cols],
        &vec![0.0; cols],
        rows,
        cols,
        eps,
    );
    for r in 0..rows {
        let row = &out[r * cols..(r + 1) * cols];
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / cols as f64;
        assert!(m.abs() < 1e-6, "layer_norm row {r} mean {m}");
        assert!((v - 1.0).abs() < 1e-4, "layer_norm row {r} variance {v}");
    }
    layer_norm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, rows, cols, eps);
    let mut want = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / cols as f64;
        let s = 1.0 / (var + eps as f64).sqrt();
        assert!((mean[r] as f64 - m).abs() < 1e-6 && (rstd[r] as f64 - s).abs() < 1e-6 * s);
        for c in 0..cols {
            want[r * cols + c] = (row[c] as f64 - m) * s * w[c] as f64 + b[c] as f64;
        }
    }
    compare("layer_norm vs naive", &out, &want, 1e-5);
}

#[test]
fn group_norm_closed_form_and_naive() {
    let (batch, channels, len, groups, eps) = (2, 6, 17, 3, 1e-5f32);
    let mut rng = Rng::new(6);
    let x: Vec<f32> = rng
        .vec(batch * channels * len, 2.0)
        .iter()
        .map(|v| v - 1.0)
        .collect();
    let (w, b) = (rng.vec(channels, 1.0), rng.vec(channels, 1.0));
    let n = x.len();
    let (mut out, mut mean, mut rstd) = (
        vec![0.0; n],
        vec![0.0; batch * groups],
        vec![0.0; batch * groups],
    );
    group_norm_forward(
        &mut out, &mut mean, &mut rstd, &x, &w, &b, batch, channels, len, groups, eps,
    );
    let cg = channels / groups;
    let mut want = vec![0.0; n];
    for bg in 0..batch * groups {
        let blk = &x[bg * cg * len..(bg + 1) * cg * len];
        let m = blk.iter().map(|&v| v as f64).sum::<f64>() / blk.len() as f64;
        let var = blk.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / blk.len() as f64;
        let s = 1.0 / (var + eps as f64).sqrt();
        assert!((mean[bg] as f64 - m).abs() < 1e-6 && (rstd[bg] as f64 - s).abs() < 1e-6 * s);
        for (i, &v) in blk.iter().enumerate() {
            let c = (bg % groups) * cg + i / len;
            want[bg * cg * len + i] = (v as f64 - m) * s * w[c] as f64 + b[c] as f64;
        }
    }
    compare("group_norm vs naive", &out, &want, 1e-5);
}

/// Reference erf/erfc in f64, written independently of src/ops/gelu.rs: the Maclaurin series with
/// alternating terms for t < 0.5 (no cancellation there), the positive-term series
/// erf(t) = 2/√π e^{-t²} Σ (2t²)ⁿ t/(2n+1)!! for t < 3, and the Laplace continued fraction for
/// erfc, evaluated by the modified Lentz method, for t ≥ 3. Returns (erf, erfc) for t ≥ 0.
fn reference_erf_erfc(t: f64) -> (f64, f64) {
    let c = 2.0 / std::f64::consts::PI.sqrt();
    if t < 0.5 {
        let (mut term, mut sum, mut n) = (t, t, 0.0);
        while term.abs() > 1e-20 {
            n += 1.0;
            term *= -t * t / n;
            sum += term / (2.0 * n + 1.0);
        }
        (c * sum, 1.0 - c * sum)
    } else if t < 3.0 {
        let (mut term, mut sum, mut n) = (t, t, 0.0);
        while term > 1e-18 * sum {
            n += 1.0;
            term *= 2.0 * t * t / (2.0 * n + 1.0);
            sum += term;
        }
        let e = c * (-t * t).exp() * sum;
        (e, 1.0 - e)
    } else {
        // erfc(t) = e^{-t²}/√π · 1/(t + (1/2)/(t + 1/(t + (3/2)/(t + ...)))), Lentz from the top
        let tiny = 1e-300;
        let mut f = t;
        let (mut cc, mut d) = (t, 0.0);
        for n in 1..500 {
            let a = n as f64 * 0.5;
            d = t + a * d;
            d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
            cc = t + a / cc;
            let delta = cc * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-t * t).exp() / (std::f64::consts::PI.sqrt() * f);
        (1.0 - erfc, erfc)
    }
}

/// Order-preserving integer image of an f32, so ulp distance = difference.
fn ordered(f: f32) -> i64 {
    if f.is_sign_negative() {
        -((f.to_bits() & 0x7fff_ffff) as i64)
    } else {
        f.to_bits() as i64
    }
}

#[test]
fn erf_reference_matches_mpmath_constants() {
    // mpmath (40 digits) values; relative tolerance 1e-13 on the f64 reference and the library.
    let erf_vals = [
        (0.1, 0.1124629160182848922),
        (0.5, 0.52049987781304653768),
        (1.0, 0.84270079294971486934),
        (2.0, 0.99532226501895273416),
        (3.5, 0.99999925690162765859),
    ];
    let erfc_vals = [
        (3.0, 2.2090496998585441373e-5),
        (5.0, 1.5374597944280348502e-12),
        (7.0, 4.1838256077794143986e-23),
        (10.0, 2.088487583762544757e-45),
    ];
    for (x, want) in erf_vals {
        let (r, _) = reference_erf_erfc(x);
        assert!(
            (r - want).abs() < 1e-13 * want,
            "reference erf({x}) = {r}, mpmath {want}"
        );
        assert!(
            (erf_f64(x) - want).abs() < 1e-13 * want,
            "library erf({x}) = {}, mpmath {want}",
            erf_f64(x)
        );
    }
    for (x, want) in erfc_vals {
        let (_, r) = reference_erf_erfc(x);
        assert!(
            (r - want).abs() < 1e-13 * want,
            "reference erfc({x}) = {r}, mpmath {want}"
        );
        assert!(
            (erfc_f64(x) - want).abs() < 1e-12 * want,
            "library erfc({x}) = {}, mpmath {want}",
            erfc_f64(x)
        );
    }
}

#[test]
fn erf_and_gelu_within_one_ulp() {
    // 400k points on [-16, 16] (denser near 0 by also sampling [-1, 1]); erf, gelu and gelu' are
    // compared with the f64 reference rounded to f32: at most 1 ulp apart (rounding of a ~1e-14
    // accurate f64 can flip a tie), and the f64 values relative error <= 1e-12.
    let mut xs: Vec<f32> = (0..300_000)
        .map(|i| -16.0 + 32.0 * (i as f32 + 0.37) / 300_000.0)
        .collect();
    xs.extend((0..100_000).map(|i| -1.0 + 2.0 * (i as f32 + 0.61) / 100_000.0));
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e-6, -13.0, -13.5, -14.0]);
    let mut gelu = vec![0.0f32; xs.len()];
    gelu_forward(&mut gelu, &xs);
    let mut dgelu = vec![0.0f32; xs.len()];
    gelu_backward(&mut dgelu, &vec![1.0; xs.len()], &xs);
    let (mut worst_erf, mut worst_gelu, mut worst_dgelu, mut worst_rel) =
        (0i64, 0i64, 0i64, 0.0f64);
    for (i, &x) in xs.iter().enumerate() {
        let xd = x as f64;
        let (e, ec) = reference_erf_erfc(xd.abs());
        let erf_ref = e.copysign(xd);
        let d = (ordered(erf(x)) - ordered(erf_ref as f32)).abs();
        worst_erf = worst_erf.max(d);
        worst_rel = worst_rel.max((erf_f64(xd) - erf_ref).abs() / erf_ref.abs().max(1e-300));
        // Φ(x) = 0.5 erfc(-x/√2): from erfc for x < 0 (tiny values), from 1 - erfc/2 for x ≥ 0
        let (_, ect) = reference_erf_erfc(xd.abs() / std::f64::consts::SQRT_2);
        let cdf = if xd < 0.0 { 0.5 * ect } else { 1.0 - 0.5 * ect };
        let gelu_ref = xd * cdf;
        let d = (ordered(gelu[i]) - ordered(gelu_ref as f32)).abs();
        assert!(
            d <= 1,
            "gelu({x}) = {:e}, reference {gelu_ref:e}: {d} ulp",
            gelu[i]
        );
        worst_gelu = worst_gelu.max(d);
        let dref = cdf + xd * (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let d = (ordered(dgelu[i]) - ordered(dref as f32)).abs();
        assert!(
            d <= 1,
            "gelu'({x}) = {:e}, reference {dref:e}: {d} ulp",
            dgelu[i]
        );
        worst_dgelu = worst_dgelu.max(d);
        let _ = ec;
    }
    println!("erf: max {worst_erf} ulp, f64 max rel err {worst_rel:.2e}; gelu: max {worst_gelu} ulp; gelu': max {worst_dgelu} ulp");
    assert!(worst_erf <= 1, "erf: {worst_erf} ulp");
    assert!(worst_rel <= 1e-12, "erf f64 relative error {worst_rel:e}");
}

#[test]
fn gelu_closed_forms() {
    let xs = [0.0f32, -10.0, -5.0, -3.0, -1.0, 0.5, 2.0];
    // mpmath: x Φ(x)
    let want = [
        0.0,
        -7.619853024160526066e-23,
        -1.4332578593959695584e-6,
        -0.00404969409489028358,
        -0.15865525393145705141,
        0.34573123063700655182,
        1.9544997361036415856,
    ];
    let mut out = vec![f32::NAN; xs.len()];
    gelu_forward(&mut out, &xs);
    assert_eq!(out[0], 0.0, "gelu(0)");
    for i in 1..xs.len() {
        let rel = (out[i] as f64 - want[i]).abs() / want[i].abs();
        assert!(
            rel < 1.2e-7,
            "gelu({}) = {:e}, mpmath {:e}",
            xs[i],
            out[i],
            want[i]
        );
    }
    // gelu(x) - gelu(-x) = x, and gelu(x) → x for large x
    let ys: Vec<f32> = (0..101).map(|i| i as f32 * 0.173).collect();
    let neg: Vec<f32> = ys.iter().map(|v| -v).collect();
    let (mut gp, mut gn) = (vec![0.0; ys.len()], vec![0.0; ys.len()]);
    gelu_forward(&mut gp, &ys);
    gelu_forward(&mut gn, &neg);
    for i in 0..ys.len() {
        assert!(
            ((gp[i] - gn[i]) - ys[i]).abs() <= 2.0 * f32::EPSILON * ys[i].max(1.0),
            "gelu odd part at {}",
            ys[i]
        );
    }
    gelu_forward(&mut out[..1], &[30.0]);
    assert_eq!(out[0], 30.0);
}

/// Naive f64 attention with key mask; returns (out, lse).
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    valid: Option<&[u8]>,
    s: &AttentionShape,
    scale: f32,
) -> (Vec<f64>, Vec<f64>) {
    let (t, h_n, d) = (s.seq, s.heads, s.head_dim);
    let w = h_n * d;
    let mut out = vec![0.0; s.batch * t * w];
    let mut lse = vec![0.0; s.batch * h_n * t];
    for b in 0..s.batch {
        for h in 0..h_n {
            for i in 0..t {
                let idx = |x: &[f32], r: usize, c: usize| x[(b * t + r) * w + h * d + c] as f64;
                let ok = |j: usize| valid.is_none_or(|m| m[b * t + j] != 0);
                let sc: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d).map(|c| idx(q, i, c) * idx(k, j, c)).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = (0..t)
                    .filter(|&j| ok(j))
                    .map(|j| sc[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = (0..t).filter(|&j| ok(j)).map(|j| (sc[j] - mx).exp()).sum();
                lse[(b * h_n + h) * t + i] = mx + z.ln();
                for c in 0..d {
                    let o: f64 = (0..t)
                        .filter(|&j| ok(j))
                        .map(|j| (sc[j] - mx).exp() / z * idx(v, j, c))
                        .sum();
                    out[(b * t + i) * w + h * d + c] = o;
                }
            }
        }
    }
    (out, lse)
}

#[test]
fn attention_matches_naive() {
    let mut rng = Rng::new(7);
    for (s, masked) in [
        (
            AttentionShape {
                batch: 2,
                seq: 13,
                heads: 3,
                head_dim: 7,
            },
            true,
        ),
        (
            AttentionShape {
                batch: 1,
                seq: 40,
                heads: 2,
                head_dim: 5,
            },
            false,
        ),
        (
            AttentionShape {
                batch: 3,
                seq: 9,
                heads: 1,
                head_dim: 4,
            },
            true,
        ),
        // Longer than one block of query rows of the forward (2^18 scores): 700 = 374 + 326 rows.
        (
            AttentionShape {
                batch: 2,
                seq: 700,
                heads: 1,
                head_dim: 3,
            },
            true,
        ),
    ] {
        let n = s.batch * s.seq * s.heads * s.head_dim;
        let (q, k, v) = (rng.vec(n, 2.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
        let valid: Vec<u8> = (0..s.batch * s.seq)
            .map(|i| u8::from(i % s.seq < s.seq - 1 - (i / s.seq) * 2))
            .collect();
        let mask = masked.then_some(valid.as_slice());
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let (mut out, mut lse) = (vec![f32::NAN; n], vec![f32::NAN; s.batch * s.heads * s.seq]);
        attention_forward(&mut out, &mut lse, &q, &k, &v, mask, &s, scale, None);
        let (want, want_lse) = naive_attention(&q, &k, &v, mask, &s, scale);
        let tag = format!(
            "attention B{} T{} H{} D{} masked={masked}",
            s.batch, s.seq, s.heads, s.head_dim
        );
        compare(&tag, &out, &want, 1e-5);
        compare(&format!("{tag} lse"), &lse, &want_lse, 1e-5);
    }
}

#[test]
fn attention_one_valid_key_returns_its_value_and_no_key_returns_zero() {
    let s = AttentionShape {
        batch: 2,
        seq: 6,
        heads: 2,
        head_dim: 3,
    };
    let mut rng = Rng::new(8);
    let n = 2 * 6 * 6;
    let (q, k, v) = (rng.vec(n, 3.0), rng.vec(n, 3.0), rng.vec(n, 1.0));
    let mut valid = vec![0u8; 12];
    valid[4] = 1; // batch 0: only key 4; batch 1: no key at all
    let (mut out, mut lse) = (vec![f32::NAN; n], vec![f32::NAN; 2 * 2 * 6]);
    attention_forward(&mut out, &mut lse, &q, &k, &v, Some(&valid), &s, 0.7, None);
    for i in 0..6 {
        for c in 0..6 {
            assert!(
                (out[i * 6 + c] - v[4 * 6 + c]).abs() < 1e-6,
                "batch 0 row {i} col {c}"
            );
            assert_eq!(out[36 + i * 6 + c], 0.0, "batch 1 (no valid key) row {i}");
        }
    }
    for h in 0..2 {
        for i in 0..6 {
            let sc: f32 = (0..3)
                .map(|c| q[i * 6 + h * 3 + c] * k[4 * 6 + h * 3 + c])
                .sum::<f32>()
                * 0.7;
            assert!((lse[h * 6 + i] - sc).abs() < 1e-5, "lse = the single score");
            assert_eq!(lse[(2 + h) * 6 + i], f32::NEG_INFINITY);
        }
    }
}

#[test]
fn weight_norm_closed_form_and_naive() {
    let mut rng = Rng::new(9);
    let dims = [5usize, 3, 4];
    let v = rng.vec(60, 1.0);
    for dim in [0usize, 1, 2] {
        let g = rng.vec(dims[dim], 2.0);
        let (mut w, mut norms) = (vec![0.0; 60], vec![0.0; dims[dim]]);
        weight_norm_forward(&mut w, &mut norms, &g, &v, dims, dim);
        let slot = |e: usize| match dim {
            0 => e / 12,
            1 => (e / 4) % 3,
            _ => e % 4,
        };
        let mut ss = vec![0.0f64; dims[dim]];
        for (e, &x) in v.iter().enumerate() {
            ss[slot(e)] += x as f64 * x as f64;
        }
        let want: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(e, &x)| g[slot(e)] as f64 * x as f64 / ss[slot(e)].sqrt())
            .collect();
        compare(&format!("weight_norm dim {dim}"), &w, &want, 1e-6);
        // closed form: each slot of w has norm |g|
        let mut wn = vec![0.0f64; dims[dim]];
        for (e, &x) in w.iter().enumerate() {
            wn[slot(e)] += x as f64 * x as f64;
        }
        for s in 0..dims[dim] {
            assert!(
                (wn[s].sqrt() - (g[s] as f64).abs()).abs() < 1e-6,
                "||w slot {s}|| = |g|"
            );
            assert!((norms[s] as f64 - ss[s].sqrt()).abs() < 1e-6);
        }
    }
}

#[test]
fn mean_pool_matches_naive() {
    let (batch, seq, channels) = (3, 11, 5);
    let lengths = [11, 4, 0];
    let mut rng = Rng::new(10);
    let x = rng.vec(batch * seq * channels, 1.0);
    let mut out = vec![f32::NAN; batch * channels];
    mean_pool_time_forward(&mut out, &x, &lengths, batch, seq, channels);
    let mut want = vec![0.0f64; batch * channels];
    for b in 0..batch {
        for c in 0..channels {
            let s: f64 = (0..lengths[b])
                .map(|t| x[(b * seq + t) * channels + c] as f64)
                .sum();
            want[b * channels + c] = if lengths[b] > 0 {
                s / lengths[b] as f64
            } else {
                0.0
            };
        }
    }
    compare("mean_pool_time", &out, &want, 1e-6);
}

#[test]
fn elementwise_match_naive() {
    let mut rng = Rng::new(11);
    let n = 70_001; // above the parallel threshold, ragged
    let (a, b) = (rng.vec(n, 1.0), rng.vec(n, 1.0));
    let mut out = vec![0.0; n];
    add_forward(&mut out, &a, &b);
    assert!(out
        .iter()
        .zip(a.iter().zip(&b))
        .all(|(o, (x, y))| *o == x + y));
    scale_forward(&mut out, &a, -1.5);
    assert!(out.iter().zip(&a).all(|(o, x)| *o == -1.5 * x));
    let mut acc = b.clone();
    accumulate(&mut acc, &a);
    assert!(acc
        .iter()
        .zip(a.iter().zip(&b))
        .all(|(o, (x, y))| *o == y + x));
    let mut acc = b.clone();
    accumulate_scaled(&mut acc, &a, 0.25);
    assert!(acc
        .iter()
        .zip(a.iter().zip(&b))
        .all(|(o, (x, y))| *o == y + 0.25 * x));
    let (batch, rows, cols) = (3, 37, 45);
    let x = rng.vec(batch * rows * cols, 1.0);
    let mut t = vec![0.0; x.len()];
    transpose_last2(&mut t, &x, batch, rows, cols);
    for bi in 0..batch {
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(t[(bi * cols + j) * rows + i], x[(bi * rows + i) * cols + j]);
            }
        }
    }
}

#[test]
fn dropout_hash_known_answers_and_mask() {
    // splitmix64's first two outputs from state 0 (published reference sequence), through the crate's
    // generator and through the dropout hash built on it
    let mut rng = culturemert_raw::rng::SplitMix64::new(0);
    assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(dropout_hash(0, 0), 0xE220_A839_7B1D_CDAF);
    assert_eq!(dropout_hash(0, 1), 0x6E78_9E6A_A1B9_65F4);
    let n = 1 << 20;
    let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
    for &p in &[0.1f32, 0.5] {
        let (seed, scale) = (1234u64, 1.0 / (1.0 - p));
        let mut out = vec![0.0; n];
        dropout_forward(&mut out, &x, p, seed);
        let mut dx = vec![0.0; n];
        dropout_backward(&mut dx, &x, p, seed);
        let mut kept = 0usize;
        for i in 0..n {
            let keep = dropout_keep(seed, i as u64, p);
            kept += keep as usize;
            assert_eq!(
                out[i],
                if keep { x[i] * scale } else { 0.0 },
                "forward element {i}"
            );
            assert_eq!(dx[i], out[i], "backward uses the forward's mask at {i}");
        }
        // binomial: |kept - n(1-p)| within 5 standard deviations
        let (mean, sd) = (
            n as f64 * (1.0 - p as f64),
            (n as f64 * p as f64 * (1.0 - p as f64)).sqrt(),
        );
        println!("dropout p={p}: kept {kept} of {n}, expected {mean:.0} ± {sd:.0}");
        assert!(
            (kept as f64 - mean).abs() < 5.0 * sd,
            "keep fraction off: {kept}"
        );
        // another seed gives a different mask
        let mut other = vec![0.0; n];
        dropout_forward(&mut other, &x, p, seed + 1);
        assert!(other != out);
    }
    let mut out = vec![0.0; n];
    dropout_forward(&mut out, &x, 0.0, 9);
    assert_eq!(out, x, "p = 0 is the identity");
    dropout_forward(&mut out, &x, 1.0, 9);
    assert!(out.iter().all(|&v| v == 0.0), "p = 1 drops everything");
}

#[test]
fn fast_exp_matches_std() {
    // exp_f64 vs std exp: relative error <= 1e-15 on [-708, 709]; exp_f32 vs the f64 exp rounded
    // to f32: <= 1 ulp on [-87, 88] (the softmax range).
    let (mut worst64, mut worst32) = (0.0f64, 0i64);
    for i in 0..200_001 {
        let y = -708.0 + 1417.0 * i as f64 / 200_000.0;
        let rel = (exp_f64(y) - y.exp()).abs() / y.exp();
        assert!(rel <= 1e-15, "exp_f64({y}): rel err {rel:e}");
        worst64 = worst64.max(rel);
        let yf = (-87.0 + 175.0 * i as f64 / 200_000.0) as f32;
        let d = (ordered(exp_f32(yf)) - ordered((yf as f64).exp() as f32)).abs();
        assert!(
            d <= 1,
            "exp_f32({yf}) = {:e} vs {:e}: {d} ulp",
            exp_f32(yf),
            (yf as f64).exp()
        );
        worst32 = worst32.max(d);
    }
    assert_eq!(exp_f64(0.0), 1.0);
    assert_eq!(exp_f32(0.0), 1.0);
    println!("exp_f64 max rel err {worst64:.2e}; exp_f32 max {worst32} ulp");
}
