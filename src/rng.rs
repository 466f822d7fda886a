//! The crate's one random generator: splitmix64 (Steele, Lea, Flood 2014), a 64-bit Weyl counter passed
//! through a bijective mixer. Small, fast, every seed gives a full-period stream, and the same numbers on
//! every platform, so a seed pins a run. Not cryptographic. The dropout kernels in kernels/dropout.cu
//! compute [`mix64`] themselves (they cannot call Rust); tests/ops_closed_form.rs pins the sequence.

/// The Weyl increment (2^64 / golden ratio, odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function: a bijection of u64 that scrambles nearby inputs.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream whose state starts at `seed` (first output: `mix64(seed + GOLDEN_GAMMA)`).
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Stream `stream` of `seed`: the state is offset by a second odd constant and one output discarded,
    /// so nearby (seed, stream) pairs are unrelated.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut s = SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        s.next_u64();
        s
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, 1) with 24 random bits (exact in f32).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi) (24 random bits).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform_f32()
    }

    /// True with probability p (24 random bits).
    pub fn chance(&mut self, p: f32) -> bool {
        self.uniform_f32() < p
    }

    /// Uniform integer in [0, n) (modulo draw: bias below 2^-40 for n < 2^24); n must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One standard normal number: Box-Muller, the cosine output of each pair.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` standard normal numbers by Box-Muller (both outputs of each pair used).
    pub fn normals(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
            out.push(r * c);
            out.push(r * s);
        }
        out.truncate(n);
        out
    }
}
