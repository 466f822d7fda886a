//! Exact (erf) GELU: gelu(x) = x Φ(x), Φ(x) = 0.5 (1 + erf(x/√2)) = 0.5 erfc(-x/√2).
//!
//! The trick: everything is evaluated in f64 and rounded once to f32, and the negative tail uses
//! erfc (no cancellation in 1 + erf), so gelu is accurate to f32 rounding everywhere, including
//! x ≪ 0 where it is tiny. erfc(t) for t ≥ 0 is erfcx(t) e^{-t²}, with erfcx(t) = e^{t²} erfc(t)
//! (smooth, slowly varying) written as S(Y) / (1 + t), Y = (t - K)/(t + K) mapping [0, ∞) onto
//! [-1, 1): S is one polynomial of degree 20 in Y for the whole half-line (relative error ~1e-14,
//! Weideman's idea), so every lane of a SIMD loop uses the same coefficients (no table
//! gather) and the GELU loop is branch-free (vectorizable exp from `fastmath`). Beyond t = 26,
//! erfc(t) < 1e-295 is taken as 0. The coefficients are computed once from a slow reference: the
//! all-positive series erf(t) = 2/√π e^{-t²} Σ (2t²)ⁿ t / (2n+1)!! for t < 1, Laplace's continued
//! fraction for erfcx for t ≥ 1. `erf` itself uses the Taylor series for |t| < 0.5 (no cancellation
//! for tiny arguments).

use super::fastmath::{exp_f64, with_simd};
use super::gemm::rows_per_task;
use rayon::prelude::*;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
use std::sync::OnceLock;

/// Centre of the map Y = (t - K)/(t + K) (Y = 0 at t = K).
const MAP_K: f64 = 3.0;
const DEGREE: usize = 20;
/// erfc(t) is taken as 0 from here on (e^{-t²} would underflow `exp_f64`'s clamp).
const TAIL_END: f64 = 26.0;
/// |t| below which `erf` uses its Taylor series.
const SMALL: f64 = 0.5;

/// Slow accurate e^{t²} erfc(t) for t ≥ 0 (relative error ~1e-15), used only to build the series.
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

/// Monomial coefficients (in Y, lowest first) of (1 + t) erfcx(t): interpolated at the Chebyshev
/// nodes, then expanded (the coefficients stay below 1, so Horner's rule is as accurate as Clenshaw's
/// recurrence at half the operations).
fn erfcx_series() -> &'static [f64; DEGREE + 1] {
    static SERIES: OnceLock<[f64; DEGREE + 1]> = OnceLock::new();
    SERIES.get_or_init(|| {
        let n = DEGREE + 1;
        let f: Vec<f64> = (0..n)
            .map(|k| {
                let y = (PI * (k as f64 + 0.5) / n as f64).cos();
                let t = MAP_K * (1.0 + y) / (1.0 - y);
                (1.0 + t) * erfcx_reference(t)
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
        chebyshev_to_monomial(&c)
    })
}

/// Σ c_j T_j(Y) as Σ a_k Y^k (T_{j+1} = 2Y T_j - T_{j-1}).
fn chebyshev_to_monomial(c: &[f64; DEGREE + 1]) -> [f64; DEGREE + 1] {
    let mut a = [0.0; DEGREE + 1];
    let (mut prev, mut cur) = ([0.0; DEGREE + 1], [0.0; DEGREE + 1]);
    prev[0] = 1.0; // T_0
    cur[1] = 1.0; // T_1
    a[0] = c[0];
    for (j, &cj) in c.iter().enumerate().skip(1) {
        for k in 0..=j {
            a[k] += cj * cur[k];
        }
        let mut next = [0.0; DEGREE + 1];
        for k in 0..DEGREE {
            next[k + 1] = 2.0 * cur[k];
        }
        for k in 0..=DEGREE {
            next[k] -= prev[k];
        }
        (prev, cur) = (cur, next);
    }
    a
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

/// erfcx(t) for 0 <= t < TAIL_END (Horner's rule in Y with fused multiply-adds, divided by 1 + t).
#[inline(always)]
fn erfcx_eval(a: &[f64; DEGREE + 1], t: f64) -> f64 {
    let y = (t - MAP_K) / (t + MAP_K);
    let mut p = a[DEGREE];
    for &ak in a[..DEGREE].iter().rev() {
        p = p.mul_add(y, ak);
    }
    p / (1.0 + t)
}

/// erfc(t) and e^{-t²} for t ≥ 0.
#[inline(always)]
fn erfc_and_gauss(c: &[f64; DEGREE + 1], t: f64) -> (f64, f64) {
    let inside = t < TAIL_END;
    let tc = t.min(TAIL_END);
    let gauss = exp_f64(-t * t);
    // A multiply by 0/1, not a select: LLVM would sink the series under a branch and vectorize its
    // coefficient loads as masked gathers.
    let erfc = erfcx_eval(c, tc) * gauss * f64::from(u8::from(inside));
    (erfc, gauss)
}

/// erfc(z) in f64 for any z (relative error ~1e-13).
pub fn erfc_f64(z: f64) -> f64 {
    let (e, _) = erfc_and_gauss(erfcx_series(), z.abs());
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
        (1.0 - erfc_and_gauss(erfcx_series(), t).0).copysign(z)
    }
}

/// erf in f32, correctly rounded from the f64 value except in rare near-ties.
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// (Φ(x), φ(x)): the standard normal CDF and density, branch-free.
#[inline(always)]
fn normal_cdf_pdf(c: &[f64; DEGREE + 1], x: f64) -> (f64, f64) {
    let (erfc, gauss) = erfc_and_gauss(c, x.abs() * FRAC_1_SQRT_2);
    let half = 0.5 * erfc;
    let cdf = if x < 0.0 { half } else { 1.0 - half };
    (cdf, gauss * FRAC_1_SQRT_2PI)
}

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// gelu(x) = x Φ(x), one rounding to f32.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (x * normal_cdf_pdf(erfcx_series(), x).0) as f32
}

/// gelu'(x) = Φ(x) + x φ(x).
pub fn gelu_grad(x: f32) -> f32 {
    let x = x as f64;
    let (cdf, pdf) = normal_cdf_pdf(erfcx_series(), x);
    (cdf + x * pdf) as f32
}

pub fn gelu_forward(out: &mut [f32], x: &[f32]) {
    let _profile = super::profile::scope("gelu fwd", 0.0);
    assert_eq!(out.len(), x.len(), "gelu_forward: lengths differ");
    let c = erfcx_series();
    let chunk = rows_per_task(x.len(), 4096);
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(o, x)| {
            with_simd(
                #[inline(always)]
                || {
                    for (o, &x) in o.iter_mut().zip(x) {
                        let xd = x as f64;
                        *o = (xd * normal_cdf_pdf(c, xd).0) as f32;
                    }
                },
            )
        });
}

/// dx += dout * gelu'(x)
pub fn gelu_backward(dx: &mut [f32], dout: &[f32], x: &[f32]) {
    let _profile = super::profile::scope("gelu bwd", 0.0);
    assert!(
        dx.len() == x.len() && dout.len() == x.len(),
        "gelu_backward: lengths differ"
    );
    let c = erfcx_series();
    let chunk = rows_per_task(x.len(), 4096);
    dx.par_chunks_mut(chunk)
        .zip(dout.par_chunks(chunk).zip(x.par_chunks(chunk)))
        .for_each(|(dx, (d, x))| {
            with_simd(
                #[inline(always)]
                || {
                    for ((dx, &d), &x) in dx.iter_mut().zip(d).zip(x) {
                        let xd = x as f64;
                        let (cdf, pdf) = normal_cdf_pdf(c, xd);
                        *dx += d * ((cdf + xd * pdf) as f32);
                    }
                },
            )
        });
}
