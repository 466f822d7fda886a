//! Iterative radix-2 FFT in f64 for power-of-two sizes, plus the real-input transform built on a
//! half-size complex FFT. Written for the CQT (src/audio/cqt.rs), whose kernels are 65536 taps wide,
//! so everything is f64 and every twiddle is computed directly with `sin_cos` (no recurrences).
//!
//! Conventions: `forward` computes X[k] = sum_n x[n] e^{-2 pi i k n / N}; `inverse` computes
//! x[n] = sum_k X[k] e^{+2 pi i k n / N} WITHOUT the 1/N factor (so inverse(forward(x)) = N x).

use std::ops::{Add, AddAssign, Mul, Sub};

/// A complex number in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub const ZERO: Complex = Complex { re: 0.0, im: 0.0 };

    pub fn new(re: f64, im: f64) -> Self {
        Complex { re, im }
    }

    /// e^{i theta}
    pub fn cis(theta: f64) -> Self {
        let (s, c) = theta.sin_cos();
        Complex { re: c, im: s }
    }

    pub fn conj(self) -> Self {
        Complex {
            re: self.re,
            im: -self.im,
        }
    }

    pub fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }

    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    pub fn scale(self, s: f64) -> Self {
        Complex {
            re: self.re * s,
            im: self.im * s,
        }
    }
}

impl Add for Complex {
    type Output = Complex;
    fn add(self, o: Complex) -> Complex {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
}

impl AddAssign for Complex {
    fn add_assign(&mut self, o: Complex) {
        self.re += o.re;
        self.im += o.im;
    }
}

impl Sub for Complex {
    type Output = Complex;
    fn sub(self, o: Complex) -> Complex {
        Complex {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
}

impl Mul for Complex {
    type Output = Complex;
    fn mul(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
}

/// A complex FFT of one power-of-two size. Build once, reuse (immutable, so shareable across threads).
pub struct FftPlan {
    n: usize,
    /// Bit-reversed index of every position (the input permutation of the iterative algorithm).
    bitrev: Vec<u32>,
    /// Twiddles per stage, contiguous: stage with half-width h stores e^{-2 pi i j / (2h)}, j < h,
    /// at offset h - 1 (total n - 1 entries), so the inner loop reads them sequentially.
    twiddles: Vec<Complex>,
}

impl FftPlan {
    /// Plan for size `n` (a power of two, >= 1). Panics otherwise: sizes are chosen by code, not users.
    pub fn new(n: usize) -> Self {
        assert!(n.is_power_of_two(), "FFT size {n} is not a power of two");
        let bits = n.trailing_zeros();
        let bitrev = (0..n as u32)
            .map(|i| {
                if bits == 0 {
                    0
                } else {
                    i.reverse_bits() >> (32 - bits)
                }
            })
            .collect();
        let mut twiddles = Vec::with_capacity(n.saturating_sub(1));
        let mut h = 1;
        while h < n {
            for j in 0..h {
                twiddles.push(Complex::cis(-std::f64::consts::PI * j as f64 / h as f64));
            }
            h *= 2;
        }
        FftPlan {
            n,
            bitrev,
            twiddles,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// In-place forward transform (sign -1).
    pub fn forward(&self, data: &mut [Complex]) {
        self.transform(data, false);
    }

    /// In-place inverse transform (sign +1), unnormalised.
    pub fn inverse(&self, data: &mut [Complex]) {
        self.transform(data, true);
    }

    fn transform(&self, data: &mut [Complex], inverse: bool) {
        assert_eq!(
            data.len(),
            self.n,
            "FFT buffer length does not match the plan"
        );
        for (i, &r) in self.bitrev.iter().enumerate() {
            let r = r as usize;
            if i < r {
                data.swap(i, r);
            }
        }
        let mut h = 1;
        while h < self.n {
            let tw = &self.twiddles[h - 1..2 * h - 1];
            for block in data.chunks_exact_mut(2 * h) {
                let (lo, hi) = block.split_at_mut(h);
                for ((a, b), &w) in lo.iter_mut().zip(hi.iter_mut()).zip(tw) {
                    // The inverse uses conj(w): same table, sign of the imaginary part flipped.
                    let w = if inverse { w.conj() } else { w };
                    let t = w * *b;
                    *b = *a - t;
                    *a += t;
                }
            }
            h *= 2;
        }
    }
}

/// FFT of real input of size n (power of two, >= 2) through a complex FFT of size n/2: the even
/// samples go in the real part, the odd samples in the imaginary part, and the two half spectra are
/// separated with the symmetry of real-input DFTs.
pub struct RealFftPlan {
    n: usize,
    half: FftPlan,
    /// e^{-2 pi i k / n}, k <= n/2.
    twiddles: Vec<Complex>,
}

impl RealFftPlan {
    pub fn new(n: usize) -> Self {
        assert!(
            n.is_power_of_two() && n >= 2,
            "real FFT size {n} must be a power of two >= 2"
        );
        let twiddles = (0..=n / 2)
            .map(|k| Complex::cis(-2.0 * std::f64::consts::PI * k as f64 / n as f64))
            .collect();
        RealFftPlan {
            n,
            half: FftPlan::new(n / 2),
            twiddles,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// X[k] for k = 0..=n/2 (the rest is conj(X[n-k])). `out` must have n/2 + 1 entries.
    pub fn forward(&self, input: &[f64], out: &mut [Complex]) {
        let m = self.n / 2;
        assert_eq!(
            input.len(),
            self.n,
            "real FFT input length does not match the plan"
        );
        assert_eq!(out.len(), m + 1, "real FFT output must have n/2+1 entries");
        let mut z: Vec<Complex> = input
            .chunks_exact(2)
            .map(|p| Complex::new(p[0], p[1]))
            .collect();
        self.half.forward(&mut z);
        for k in 0..=m {
            let zk = z[k % m];
            let zc = z[(m - k) % m].conj();
            let even = (zk + zc).scale(0.5);
            // (zk - zc) / (2i) = odd-sample spectrum
            let d = zk - zc;
            let odd = Complex::new(d.im * 0.5, -d.re * 0.5);
            out[k] = even + self.twiddles[k] * odd;
        }
    }

    /// Unnormalised inverse (returns n * x) from the half spectrum X[0..=n/2].
    pub fn inverse(&self, spectrum: &[Complex], out: &mut [f64]) {
        let m = self.n / 2;
        assert_eq!(
            spectrum.len(),
            m + 1,
            "real IFFT input must have n/2+1 entries"
        );
        assert_eq!(
            out.len(),
            self.n,
            "real IFFT output length does not match the plan"
        );
        let mut z: Vec<Complex> = (0..m)
            .map(|k| {
                let xk = spectrum[k];
                let xc = spectrum[m - k].conj();
                let even = (xk + xc).scale(0.5);
                let odd = (xk - xc).scale(0.5) * self.twiddles[k].conj();
                // z = E + i O, doubled: the half-size inverse supplies n/2, the full one needs n.
                Complex::new(even.re - odd.im, even.im + odd.re).scale(2.0)
            })
            .collect();
        self.half.inverse(&mut z);
        for (pair, v) in out.chunks_exact_mut(2).zip(&z) {
            pair[0] = v.re;
            pair[1] = v.im;
        }
    }
}

/// Forward FFT of real samples of any power-of-two length, returning the full spectrum of n bins.
pub fn real_fft_full(plan: &RealFftPlan, input: &[f64]) -> Vec<Complex> {
    let n = plan.len();
    let mut half = vec![Complex::ZERO; n / 2 + 1];
    plan.forward(input, &mut half);
    let mut full = Vec::with_capacity(n);
    full.extend_from_slice(&half);
    full.extend((n / 2 + 1..n).map(|k| half[n - k].conj()));
    full
}
