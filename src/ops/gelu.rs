//! Exact (erf) GELU: gelu(x) = x Φ(x), Φ(x) = 0.5 (1 + erf(x/√2)) = 0.5 erfc(-x/√2).
//!
//! The trick: everything is evaluated in f64 and rounded once to f32, and the negative tail uses
//! erfc (no cancellation in 1 + erf), so gelu is accurate to f32 rounding everywhere, including
//! x ≪ 0 where it is tiny. erf on [0, 0.5) is its Taylor series; erfc(t) for t in [0.5, 10.5)
//! is erfcx(t) e^{-t²}, with erfcx(t) = e^{t²} erfc(t) (smooth, slowly varying) interpolated at
//! Chebyshev nodes on 20 intervals of width 0.5 (degree 14). The interpolation tables are built
//! once from a slow reference: the all-positive series erf(t) = 2/√π e^{-t²} Σ (2t²)ⁿ t / (2n+1)!!
//! for t < 1, Laplace's continued fraction for erfcx for t ≥ 1.

use super::gemm::rows_per_task;
use rayon::prelude::*;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
use std::sync::OnceLock;

const TABLE_START: f64 = 0.5;
const TABLE_STEP: f64 = 0.5;
const TABLE_INTERVALS: usize = 20; // covers [0.5, 10.5); beyond, erfc(t) < 1e-49 underflows f32
const DEGREE: usize = 14;

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
                let centre = TABLE_START + (i as f64 + 0.5) * TABLE_STEP;
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

/// erfc(t) for t ≥ 0.5.
fn erfc_tail(t: f64) -> f64 {
    let pos = (t - TABLE_START) / TABLE_STEP;
    let i = pos as usize;
    if i >= TABLE_INTERVALS {
        return 0.0;
    }
    let c = &erfcx_table()[i];
    let u = 2.0 * (pos - i as f64) - 1.0;
    // Clenshaw recurrence for Σ c_j T_j(u).
    let (mut b1, mut b2) = (0.0, 0.0);
    for &cj in c.iter().rev() {
        let b0 = cj + 2.0 * u * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    let erfcx = b1 - u * b2;
    erfcx * (-t * t).exp()
}

/// erfc(z) in f64 for any z (relative error ~1e-14).
pub fn erfc_f64(z: f64) -> f64 {
    let t = z.abs();
    if t < TABLE_START {
        1.0 - erf_small(z)
    } else if z > 0.0 {
        erfc_tail(t)
    } else {
        2.0 - erfc_tail(t)
    }
}

/// erf(z) in f64 for any z (absolute error ~1e-16).
pub fn erf_f64(z: f64) -> f64 {
    let t = z.abs();
    if t < TABLE_START {
        erf_small(z)
    } else {
        (1.0 - erfc_tail(t)).copysign(z)
    }
}

/// erf in f32, correctly rounded from the f64 value except in rare ties.
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// Standard normal CDF Φ(x) = 0.5 erfc(-x/√2).
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc_f64(-x * FRAC_1_SQRT_2)
}

/// gelu(x) = x Φ(x), one rounding to f32.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (x * normal_cdf(x)) as f32
}

/// gelu'(x) = Φ(x) + x φ(x), φ(x) = e^{-x²/2}/√(2π).
pub fn gelu_grad(x: f32) -> f32 {
    let x = x as f64;
    let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
    (normal_cdf(x) + x * pdf) as f32
}

pub fn gelu_forward(out: &mut [f32], x: &[f32]) {
    assert_eq!(out.len(), x.len(), "gelu_forward: lengths differ");
    erfcx_table();
    let c = rows_per_task(x.len(), 4096);
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = gelu(x);
            }
        });
}

/// dx += dout * gelu'(x)
pub fn gelu_backward(dx: &mut [f32], dout: &[f32], x: &[f32]) {
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward: lengths differ"
    );
    erfcx_table();
    let c = rows_per_task(x.len(), 4096);
    dx.par_chunks_mut(c)
        .zip(dout.par_chunks(c).zip(x.par_chunks(c)))
        .for_each(|(dx, (d, x))| {
            for ((dx, &d), &x) in dx.iter_mut().zip(d).zip(x) {
                *dx += d * gelu_grad(x);
            }
        });
}
