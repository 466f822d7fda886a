//! fairseq `compute_mask_indices` (MERT's call) from our PRNG: structural invariants, and the
//! distribution against a numpy simulation of fairseq's algorithm (reference/make_golden_masking.py):
//! mean masked count (all rows share it) and the per-frame masking probability of every row.

mod common;

use culturemert_raw::train::masking::{compute_mask_indices, MaskRng};
use safetensors::SafeTensors;

fn golden_file() -> std::path::PathBuf {
    common::golden("masking.safetensors")
}

fn mert_mask(t: usize, valid: &[usize], rng: &mut MaskRng) -> Vec<bool> {
    compute_mask_indices(valid.len(), t, valid, 0.8, 5, 2, rng)
}

fn row_counts(mask: &[bool], t: usize) -> Vec<usize> {
    mask.chunks(t)
        .map(|r| r.iter().filter(|&&m| m).count())
        .collect()
}

/// Lengths of the maximal runs of masked frames in one row.
fn runs(row: &[bool]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut n = 0;
    for &m in row.iter().chain(std::iter::once(&false)) {
        if m {
            n += 1;
        } else if n > 0 {
            out.push(n);
            n = 0;
        }
    }
    out
}

#[test]
fn rng_is_uniform_and_reproducible() {
    let mut a = MaskRng::new(42);
    let mut b = MaskRng::new(42);
    let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
    assert_eq!(xs, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
    assert_ne!(xs[0], MaskRng::new(43).next_u64());
    // below(7): chi-square with 6 degrees of freedom over 70000 draws; 99.99% quantile is 27.9
    let mut hist = [0usize; 7];
    for _ in 0..70000 {
        hist[a.below(7)] += 1;
    }
    let chi2: f64 = hist
        .iter()
        .map(|&h| (h as f64 - 10000.0).powi(2) / 10000.0)
        .sum();
    assert!(chi2 < 27.9, "chi2 {chi2} hist {hist:?}");
    // uniform(): mean 1/2 with std 1/sqrt(12 n); 5 sigma
    let n = 100000;
    let mean: f64 = (0..n).map(|_| a.uniform()).sum::<f64>() / n as f64;
    assert!(
        (mean - 0.5).abs() < 5.0 / (12.0 * n as f64).sqrt(),
        "mean {mean}"
    );
}

#[test]
fn structural_invariants() {
    let mut rng = MaskRng::new(7);
    let t = 374;
    for trial in 0..300 {
        // equal rows, ragged rows, and a tiny row that exercises the min_len adjustment
        let valid: Vec<usize> = match trial % 3 {
            0 => vec![t; 16],
            1 => vec![t, 301, 150, 60, 23],
            _ => vec![t, 9, 7],
        };
        let mask = mert_mask(t, &valid, &mut rng);
        let counts = row_counts(&mask, t);
        assert!(
            counts.iter().all(|&c| c == counts[0]),
            "row counts differ: {counts:?}"
        );
        for (b, &sz) in valid.iter().enumerate() {
            assert!(
                !mask[b * t + sz..(b + 1) * t].iter().any(|&m| m),
                "masked padding in row {b}"
            );
        }
    }
    // B = 1 (no cut to the batch minimum): every run is a union of whole 5-frame spans, and at least
    // two distinct spans exist, so the count is >= 6 even for sz = 10 (num_mask = max(2, 1 or 2)).
    for trial in 0..2000 {
        let sz = if trial % 2 == 0 { 374 } else { 10 };
        let mask = mert_mask(sz, &[sz], &mut rng);
        let r = runs(&mask);
        assert!(r.iter().all(|&n| n >= 5), "short run in {r:?}");
        assert!(r.iter().sum::<usize>() >= 6);
        // starts lie in [0, sz - 5), so the last frame is never masked
        assert!(!mask[sz - 1]);
        if sz == 374 {
            // 59 or 60 spans of 5: at most 300 frames
            assert!(r.iter().sum::<usize>() <= 300);
        }
    }
}

#[test]
fn distribution_matches_numpy_simulation_of_fairseq() {
    let bytes = std::fs::read(golden_file()).expect("golden file");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f64s = |name: &str| -> Vec<f64> {
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let mut rng = MaskRng::new(2026);
    for (name, trials) in [
        ("b1_t374", 20000usize),
        ("b16_t374", 2000),
        ("ragged_t374", 10000),
        ("ragged2_t374", 5000),
        ("tiny_t12", 50000),
    ] {
        let tv = st.tensor(&format!("{name}.valid")).unwrap();
        let valid: Vec<usize> = tv
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        let stats = f64s(&format!("{name}.count"));
        let (np_mean, np_std, np_trials) = (stats[0], stats[1], stats[2]);
        let marg_shape = st
            .tensor(&format!("{name}.marginal"))
            .unwrap()
            .shape()
            .to_vec();
        let np_marg = f64s(&format!("{name}.marginal"));
        let (rows, t) = (marg_shape[0], marg_shape[1]);

        let mut sum = 0.0;
        let mut marg = vec![0.0f64; valid.len() * t];
        for _ in 0..trials {
            let mask = mert_mask(t, &valid, &mut rng);
            sum += row_counts(&mask, t)[0] as f64;
            for (m, &x) in marg.iter_mut().zip(&mask) {
                *m += x as u8 as f64;
            }
        }
        let mean = sum / trials as f64;
        // two independent Monte-Carlo means: 4.5 sigma of their difference
        let bound = 4.5 * np_std * (1.0 / trials as f64 + 1.0 / np_trials).sqrt();
        eprintln!(
            "{name}: mean masked count ours {mean:.3} vs numpy {np_mean:.3} (|diff| {:.3}, bound {bound:.3}); \
             fraction of row 0 {:.4}",
            (mean - np_mean).abs(),
            mean / valid[0] as f64
        );
        assert!((mean - np_mean).abs() < bound, "{name}: mean count");

        // per-frame probabilities; rows of equal length are averaged (variance no larger than one
        // row's). 5.5 sigma per frame (~1700 frames in all) keeps the false-alarm rate below 1e-4.
        let mut worst = 0.0f64;
        for r in 0..rows {
            for i in 0..t {
                let ours = if rows == 1 {
                    (0..valid.len()).map(|b| marg[b * t + i]).sum::<f64>()
                        / (trials * valid.len()) as f64
                } else {
                    marg[r * t + i] / trials as f64
                };
                let p = np_marg[r * t + i];
                // two-proportion z-test with the pooled estimate
                let pooled = (ours * trials as f64 + p * np_trials) / (trials as f64 + np_trials);
                let sd = (pooled * (1.0 - pooled) * (1.0 / trials as f64 + 1.0 / np_trials)).sqrt();
                let z = if sd > 0.0 { (ours - p).abs() / sd } else { 0.0 };
                assert!(
                    z < 5.5,
                    "{name}: row {r} frame {i}: ours {ours} vs numpy {p} (z {z:.2})"
                );
                worst = worst.max(z);
            }
        }
        eprintln!("{name}: worst per-frame z-score {worst:.2}");
    }
}

#[test]
fn mert_expected_fractions() {
    // docs/objective.md section 4: ~58% of 374 frames for B = 1, ~54% (~202 frames) for B = 16
    let mut rng = MaskRng::new(11);
    let frac = |b: usize, rng: &mut MaskRng| {
        let n = 400;
        (0..n)
            .map(|_| row_counts(&mert_mask(374, &vec![374; b], rng), 374)[0] as f64)
            .sum::<f64>()
            / (n as f64 * 374.0)
    };
    let (f1, f16) = (frac(1, &mut rng), frac(16, &mut rng));
    assert!((f1 - 0.58).abs() < 0.01, "B=1 fraction {f1}");
    assert!((f16 - 0.54).abs() < 0.01, "B=16 fraction {f16}");
}
