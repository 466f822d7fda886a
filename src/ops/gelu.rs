//! Exact (erf) GELU: gelu(x) = x Φ(x), Φ(x) = 0.5 (1 + erf(x/√2)) = 0.5 erfc(-x/√2).
//!
//! The trick: everything is evaluated in f64 and rounded once to f32, and the negative tail uses
//! erfc (no cancellation in 1 + erf), so gelu is accurate to f32 rounding everywhere, including
//! x ≪ 0 where it is tiny. erfc(t) for t in [0, 10.5) is erfcx(t) e^{-t²}, with erfcx(t) =
//! e^{t²} erfc(t) (smooth, slowly varying) interpolated at Chebyshev nodes on 21 intervals of width
//! 0.5 (degree 10, relative error < 1e-13); beyond, erfc(t) < 1e-49 is taken as 0. Φ(x) is
//! 0.5 erfc(t) for x < 0 and 1 - 0.5 erfc(t) for x ≥ 0 (t = |x|/√2), so the GELU loop is
//! branch-free (vectorizable exp from `fastmath`). The tables are built once from a slow
//! reference: the all-positive series erf(t) = 2/√π e^{-t²} Σ (2t²)ⁿ t / (2n+1)!! for t < 1,
//! Laplace's continued fraction for erfcx for t ≥ 1. `erf` itself uses the Taylor series for
//! |t| < 0.5 (no cancellation for tiny arguments).

#[allow(unused_imports)]
use super::fastmath::exp_f64 as _exp_check;
use super::fastmath::{exp_f64, with_avx2};
use super::gemm::rows_per_task;
use rayon::prelude::*;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
use std::sync::OnceLock;

const TABLE_STEP: f64 = 0.5;
const TABLE_INTERVALS: usize = 21; // covers [0, 10.5); beyond, erfc(t) < 1e-49 underflows f32
const TABLE_END: f64 = TABLE_STEP * TABLE_INTERVALS as f64;
const DEGREE: usize = 10;
/// |t| below which `erf` uses its Taylor series.
const SMALL: f64 = 0.5;

/// Slow accurate e^{t²} erfc(t) for t ≥ 0 (relative error ~1e-15), used only to build the table.
fn erfcx_reference(t: f64) -> f64 {
    if t < 1.0 {
        let (mut term, mut sum, mut n) = (t, t, 0.0f64);
        while term > 1e-18 * sum {
            n += 1.0;
            term *= 2.0 * t * t / (2.0 * n + 1.0);
            sum += term;
        }
        let erf = FRAC_2_SQRT_PI * (-t * t).exp() * sum;
        (1.0 - erf) * (t * t).exp()
    } else {
        let mut f = t;
        for n in (1..=300).rev() {
            f = t + (n as f64 * 0.5) / f;
        }
        1.0 / (PI.sqrt() * f)
    }
}

/// Chebyshev coefficients of erfcx on each table interval, mapped to u in [-1, 1].
fn erfcx_table() -> &'static Vec<[f64; DEGREE + 1]> {
    static TABLE: OnceLock<Vec<[f64; DEGREE + 1]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = DEGREE + 1;
        (0..TABLE_INTERVALS)
            .map(|i| {
                let centre = (i as f64 + 0.5) * TABLE_STEP;
                let f: Vec<f64> = (0..n)
                    .map(|k| {
                        let u = (PI * (k as f64 + 0.5) / n as f64).cos();
                        erfcx_reference(centre + 0.5 * TABLE_STEP * u)
                    })
                    .collect();
                let mut c = [0.0; DEGREE + 1];
                for (j, cj) in c.iter_mut().enumerate() {
                    let s: f64 = (0..n)
                        .map(|k| f[k] * (PI * j as f64 * (k as f64 + 0.5) / n as f64).cos())
                        .sum();
                    *cj = 2.0 * s / n as f64;
                }
                c[0] *= 0.5;
                c
            })
            .collect()
    })
}

/// erf(t) for |t| < 0.5: Taylor series t Σ (-1)ⁿ t²ⁿ / (n! (2n+1)) · 2/√π (13 terms, error < 1e-17).
fn erf_small(t: f64) -> f64 {
    let t2 = t * t;
    let acc = ERF_SMALL_COEFFS
        .iter()
        .rev()
        .fold(0.0, |acc, &c| acc * t2 + c);
    FRAC_2_SQRT_PI * t * acc
}

/// (-1)ⁿ / (n! (2n+1)), n = 0..13.
const ERF_SMALL_COEFFS: [f64; 13] = {
    let mut c = [0.0; 13];
    let mut fact = 1.0;
    let mut n = 0;
    while n < 13 {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = sign / (fact * (2 * n + 1) as f64);
        n += 1;
    }
    c
};

/// erfcx(t) for 0 <= t < TABLE_END from the table (Clenshaw recurrence for Σ c_j T_j(u)).
#[inline(always)]
fn erfcx_table_eval(table: &[[f64; DEGREE + 1]], t: f64) -> f64 {
    let pos = t / TABLE_STEP;
    let i = (pos as usize).min(TABLE_INTERVALS - 1);
    let c = &table[i];
    let u = 2.0 * (pos - i as f64) - 1.0;
    let (mut b1, mut b2) = (0.0, 0.0);
    for &cj in c.iter().rev() {
        let b0 = cj + 2.0 * u * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    b1 - u * b2
}

/// erfc(t) and e^{-t²} for t ≥ 0.
#[inline(always)]
fn erfc_and_gauss(table: &[[f64; DEGREE + 1]], t: f64) -> (f64, f64) {
    let inside = t < TABLE_END;
    let tc = if inside { t } else { 0.0 };
    let gauss = exp_f64(-t * t);
    let erfc = erfcx_table_eval(table, tc) * gauss;
    (if inside { erfc } else { 0.0 }, gauss)
}

/// erfc(z) in f64 for any z (relative error ~1e-13).
pub fn erfc_f64(z: f64) -> f64 {
    let (e, _) = erfc_and_gauss(erfcx_table(), z.abs());
    if z < 0.0 {
        2.0 - e
    } else {
        e
    }
}

/// erf(z) in f64 for any z (relative error ~1e-13).
pub fn erf_f64(z: f64) -> f64 {
    let t = z.abs();
    if t < SMALL {
        erf_small(z)
    } else {
        (1.0 - erfc_and_gauss(erfcx_table(), t).0).copysign(z)
    }
}

/// erf in f32, correctly rounded from the f64 value except in rare near-ties.
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// (Φ(x), φ(x)): the standard normal CDF and density, branch-free.
#[inline(always)]
fn normal_cdf_pdf(table: &[[f64; DEGREE + 1]], x: f64) -> (f64, f64) {
    let (erfc, gauss) = erfc_and_gauss(table, x.abs() * FRAC_1_SQRT_2);
    let half = 0.5 * erfc;
    let cdf = if x < 0.0 { half } else { 1.0 - half };
    (cdf, gauss * FRAC_1_SQRT_2PI)
}

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// gelu(x) = x Φ(x), one rounding to f32.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (x * normal_cdf_pdf(erfcx_table(), x).0) as f32
}

/// gelu'(x) = Φ(x) + x φ(x).
pub fn gelu_grad(x: f32) -> f32 {
    let x = x as f64;
    let (cdf, pdf) = normal_cdf_pdf(erfcx_table(), x);
    (cdf + x * pdf) as f32
}

pub fn gelu_forward(out: &mut [f32], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "gelu_forward: lengths differ");
    let table = erfcx_table().as_slice();
    let c = rows_per_task(x.len(), 4096);
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, x)| {
            with_avx2(
                #[inline(always)]
                || {
                    for (o, &x) in o.iter_mut().zip(x) {
                        let xd = x as f64;
                        *o = (xd * normal_cdf_pdf(table, xd).0) as f32;
                    }
                },
            )
        });
}

/// dx += dout * gelu'(x)
pub fn gelu_backward(dx: &mut [f32], dout: &[f32], x: &[f32]) {
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward: lengths differ"
    );
    let table = erfcx_table().as_slice();
    let c = rows_per_task(x.len(), 4096);
    dx.par_chunks_mut(c)
        .zip(dout.par_chunks(c).zip(x.par_chunks(c)))
        .for_each(|(dx, (d, x))| {
            with_avx2(
                #[inline(always)]
                || {
                    for ((dx, &d), &x) in dx.iter_mut().zip(d).zip(x) {
                        let xd = x as f64;
                        let (cdf, pdf) = normal_cdf_pdf(table, xd);
                        *dx += d * ((cdf + xd * pdf) as f32);
                    }
                },
            )
        });
}
