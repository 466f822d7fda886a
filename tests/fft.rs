//! The radix-2 FFT against an independent naive O(n^2) DFT (small sizes, f64 sums with directly
//! computed exponentials) and, for the large CQT sizes, round trip + Parseval + a closed-form tone.

use culturemert_raw::audio::fft::{real_fft_full, Complex, FftPlan, RealFftPlan};
use std::f64::consts::PI;

/// Deterministic values in [-1, 1) (the crate's splitmix64, 53-bit uniforms).
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = culturemert_raw::rng::SplitMix64::new(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

fn complex_noise(n: usize, seed: u64) -> Vec<Complex> {
    let v = noise(2 * n, seed);
    v.chunks_exact(2)
        .map(|p| Complex::new(p[0], p[1]))
        .collect()
}

fn naive_dft(x: &[Complex], sign: f64) -> Vec<Complex> {
    let n = x.len();
    (0..n)
        .map(|k| {
            let mut acc = Complex::ZERO;
            for (j, &v) in x.iter().enumerate() {
                // reduce k*j mod n first so the angle stays small and exact
                let ang = sign * 2.0 * PI * ((k * j) % n) as f64 / n as f64;
                acc += v * Complex::cis(ang);
            }
            acc
        })
        .collect()
}

fn max_err(a: &[Complex], b: &[Complex]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x - *y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn complex_fft_matches_naive_dft() {
    for (i, &n) in [1usize, 2, 4, 8, 16, 32, 128, 512].iter().enumerate() {
        let x = complex_noise(n, 7 + i as u64);
        let plan = FftPlan::new(n);
        let mut f = x.clone();
        plan.forward(&mut f);
        let want = naive_dft(&x, -1.0);
        let err = max_err(&f, &want);
        // |X| ~ sqrt(n); f64 rounding of both sides ~ 1e-16 * n
        assert!(err < 1e-12 * n as f64, "forward n={n}: max err {err}");
        let mut b = x.clone();
        plan.inverse(&mut b);
        let err = max_err(&b, &naive_dft(&x, 1.0));
        assert!(err < 1e-12 * n as f64, "inverse n={n}: max err {err}");
    }
}

#[test]
fn real_fft_matches_naive_dft_and_inverts() {
    for (i, &n) in [2usize, 4, 8, 16, 64, 256].iter().enumerate() {
        let x = noise(n, 100 + i as u64);
        let plan = RealFftPlan::new(n);
        let full = real_fft_full(&plan, &x);
        let xc: Vec<Complex> = x.iter().map(|&v| Complex::new(v, 0.0)).collect();
        let want = naive_dft(&xc, -1.0);
        let err = max_err(&full, &want);
        assert!(err < 1e-12 * n as f64, "real forward n={n}: max err {err}");
        let mut back = vec![0.0; n];
        plan.inverse(&full[..n / 2 + 1], &mut back);
        let err = back
            .iter()
            .zip(&x)
            .map(|(b, v)| (b / n as f64 - v).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-13 * n as f64, "real inverse n={n}: max err {err}");
    }
}

#[test]
fn large_sizes_round_trip_parseval_and_tone() {
    for &n in &[65536usize, 131072] {
        let x = noise(n, n as u64);
        let plan = RealFftPlan::new(n);
        let spec = real_fft_full(&plan, &x);
        // Parseval: sum |x|^2 = (1/n) sum |X|^2
        let et: f64 = x.iter().map(|v| v * v).sum();
        let ef: f64 = spec.iter().map(|c| c.norm_sqr()).sum::<f64>() / n as f64;
        let rel = (et - ef).abs() / et;
        assert!(rel < 1e-12, "Parseval n={n}: rel err {rel}");
        let mut back = vec![0.0; n];
        plan.inverse(&spec[..n / 2 + 1], &mut back);
        let err = back
            .iter()
            .zip(&x)
            .map(|(b, v)| (b / n as f64 - v).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "round trip n={n}: max err {err}");

        // complex tone at a bin frequency: exactly n at bin k0, zero elsewhere
        let k0 = 12345 % n;
        let mut tone: Vec<Complex> = (0..n)
            .map(|j| Complex::cis(2.0 * PI * ((k0 * j) % n) as f64 / n as f64))
            .collect();
        FftPlan::new(n).forward(&mut tone);
        let mut worst = 0.0f64;
        for (k, c) in tone.iter().enumerate() {
            let want = if k == k0 { n as f64 } else { 0.0 };
            worst = worst.max((*c - Complex::new(want, 0.0)).abs());
        }
        assert!(worst < 1e-9, "tone n={n}: max err {worst}");
    }
}
