//! Span masking for masked prediction: fairseq's `compute_mask_indices` exactly as MERT calls it
//! (docs/objective.md section 4: mask_type "static", no_overlap False, require_same_masks True,
//! mask_dropout 0), drawn from our own seeded PRNG. numpy's stream cannot be reproduced, so the
//! DISTRIBUTION is matched (tests/masking.rs compares with a numpy simulation).
//!
//! Per row b with sz = valid_frames[b] (padding is at the end of the row):
//!   num_mask = max(min_masks, floor(mask_prob * sz / mask_length + U[0,1)))
//!   min_len = mask_length, or sz - num_mask - 1 when sz - mask_length <= num_mask
//!   starts  = num_mask distinct draws from 0 .. sz - min_len
//!   idx_b   = { s + o : s in starts, 0 <= o < mask_length } restricted to [0, sz)
//! then every row with more than m = min_b |idx_b| indices keeps a uniformly random subset of m.

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64: small, fast, 256-bit state, good
/// statistical quality. Not cryptographic; one stream per training process is enough.
#[derive(Clone, Debug)]
pub struct MaskRng {
    s: [u64; 4],
}

impl MaskRng {
    pub fn new(seed: u64) -> Self {
        let mut sm = crate::rng::SplitMix64::new(seed);
        MaskRng {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n), n >= 1, without modulo bias (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n >= 1, "MaskRng::below(0)");
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// `k` distinct values of `pool`, uniformly (partial Fisher-Yates; `pool` is reordered).
    fn choose_distinct<T: Copy>(&mut self, pool: &mut [T], k: usize) -> Vec<T> {
        assert!(
            k <= pool.len(),
            "cannot choose {k} of {} without replacement",
            pool.len()
        );
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool[..k].to_vec()
    }
}

/// Boolean mask [batch * frames] (row-major), true = masked. `valid_frames[b]` <= frames is the number
/// of non-padded frames of row b. MERT: mask_prob 0.8, mask_length 5, min_masks 2.
pub fn compute_mask_indices(
    batch: usize,
    frames: usize,
    valid_frames: &[usize],
    mask_prob: f32,
    mask_length: usize,
    min_masks: usize,
    rng: &mut MaskRng,
) -> Vec<bool> {
    assert_eq!(valid_frames.len(), batch, "one valid-frame count per row");
    assert!(
        valid_frames.iter().all(|&v| v <= frames),
        "valid frames exceed the row length"
    );
    assert!(mask_length >= 1, "mask_length must be >= 1");
    // fairseq multiplies the Python double 0.8, not f32 0.8 widened; the shortest decimal of the f32
    // recovers it, so floor(p*sz/len + U) switches at the same U as fairseq.
    let p: f64 = format!("{mask_prob}").parse().unwrap_or(mask_prob as f64);

    let rows: Vec<Vec<usize>> = valid_frames
        .iter()
        .map(|&sz| {
            let num_mask = ((p * sz as f64 / mask_length as f64 + rng.uniform()).floor() as usize)
                .max(min_masks);
            let (sz_i, len_i, num_i) = (sz as i64, mask_length as i64, num_mask as i64);
            let min_len = if sz_i - len_i <= num_i {
                sz_i - num_i - 1
            } else {
                len_i
            };
            let n_starts = (sz_i - min_len) as usize; // >= num_mask + 1 in the adjusted case
            let mut pool: Vec<usize> = (0..n_starts).collect();
            let starts = rng.choose_distinct(&mut pool, num_mask);
            let mut hit = vec![false; sz];
            for s in starts {
                let end = (s + mask_length).min(sz);
                hit[s.min(end)..end].fill(true);
            }
            (0..sz).filter(|&i| hit[i]).collect()
        })
        .collect();

    let m = rows.iter().map(Vec::len).min().unwrap_or(0);
    let mut mask = vec![false; batch * frames];
    for (b, mut idx) in rows.into_iter().enumerate() {
        let keep = if idx.len() > m {
            rng.choose_distinct(&mut idx, m)
        } else {
            idx
        };
        for i in keep {
            mask[b * frames + i] = true;
        }
    }
    mask
}
