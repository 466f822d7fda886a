//! MERT's in-batch noise mixup (docs/objective.md section 6): with probability `prob` a clip gets 1..=3 segments
//! of 0.5-1 s taken from the concatenation of the OTHER clips of the batch added at random positions, at
//! volume 1, no scaling or clipping. Noise always comes from the un-mixed batch. Runs after the CQT target
//! and the labels were taken from the clean audio.

use crate::train::masking::MaskRng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixupConfig {
    pub prob: f32,
    pub min_samples: usize,
    pub max_samples: usize,
    pub min_count: usize,
    pub max_count: usize,
}

/// Mix `audio` [B, L] in place; returns how many clips were augmented. A batch of one clip, or clips
/// shorter than a noise segment, are left unchanged (fairseq's exception path).
pub fn inbatch_noise_mixup(
    audio: &mut [f32],
    batch: usize,
    len: usize,
    cfg: &MixupConfig,
    rng: &mut MaskRng,
) -> usize {
    assert_eq!(audio.len(), batch * len);
    if batch < 2 || cfg.prob <= 0.0 {
        return 0;
    }
    let clean = audio.to_vec();
    let mut mixed = 0;
    for i in 0..batch {
        // fairseq augments when rand > mixture_prob, i.e. with probability 1 - mixture_prob; MERT sets 0.5.
        // Here `prob` is the probability of augmenting.
        if rng.uniform() >= cfg.prob as f64 {
            continue;
        }
        let pool: Vec<f32> = clean[..i * len]
            .iter()
            .chain(&clean[(i + 1) * len..])
            .copied()
            .collect();
        if pool.len() < cfg.max_samples || len < cfg.max_samples {
            continue;
        }
        let n = cfg.min_count + rng.below(cfg.max_count - cfg.min_count + 1);
        let out = &mut audio[i * len..(i + 1) * len];
        for _ in 0..n {
            let start = rng.below(pool.len() - cfg.max_samples + 1);
            let dur = cfg.min_samples + rng.below(cfg.max_samples - cfg.min_samples + 1);
            let pos = rng.below(len - dur + 1);
            for (o, &p) in out[pos..pos + dur]
                .iter_mut()
                .zip(&pool[start..start + dur])
            {
                *o += p;
            }
        }
        mixed += 1;
    }
    mixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixup_adds_segments_of_other_clips_only() {
        // Clip i is the constant i+1: every added segment must come from other clips, so each sample of clip
        // i is (i+1) + a sum of other clips' constants, and at least min_samples samples changed.
        let (b, l) = (3, 30000);
        let cfg = MixupConfig {
            prob: 1.0,
            min_samples: 12000,
            max_samples: 24000,
            min_count: 1,
            max_count: 3,
        };
        let mut audio: Vec<f32> = (0..b)
            .flat_map(|i| std::iter::repeat_n((i + 1) as f32, l))
            .collect();
        let mut rng = MaskRng::new(5);
        assert_eq!(inbatch_noise_mixup(&mut audio, b, l, &cfg, &mut rng), 3);
        for i in 0..b {
            let clip = &audio[i * l..(i + 1) * l];
            let changed = clip.iter().filter(|&&v| v != (i + 1) as f32).count();
            assert!(changed >= 12000, "clip {i}: only {changed} samples changed");
            for &v in clip {
                let extra = v - (i + 1) as f32;
                // extra is a sum of up to 3 values from {1,2,3} \ {i+1}: never a multiple that needs clip i itself
                assert!((0.0..=9.0).contains(&extra) && extra.fract() == 0.0);
            }
        }
    }

    #[test]
    fn probability_zero_and_single_clip_leave_audio_unchanged() {
        let cfg = MixupConfig {
            prob: 0.0,
            min_samples: 10,
            max_samples: 20,
            min_count: 1,
            max_count: 3,
        };
        let mut audio = vec![0.5f32; 200];
        assert_eq!(
            inbatch_noise_mixup(&mut audio, 2, 100, &cfg, &mut MaskRng::new(1)),
            0
        );
        let cfg = MixupConfig { prob: 1.0, ..cfg };
        assert_eq!(
            inbatch_noise_mixup(&mut audio[..100], 1, 100, &cfg, &mut MaskRng::new(1)),
            0
        );
        assert!(audio.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn augmentation_rate_follows_prob() {
        let cfg = MixupConfig {
            prob: 0.5,
            min_samples: 10,
            max_samples: 20,
            min_count: 1,
            max_count: 1,
        };
        let mut rng = MaskRng::new(9);
        let mut total = 0;
        for _ in 0..500 {
            let mut audio = vec![1.0f32; 4 * 100];
            total += inbatch_noise_mixup(&mut audio, 4, 100, &cfg, &mut rng);
        }
        // 2000 Bernoulli(0.5) draws: mean 1000, sd 22.4; 5 sd bound.
        assert!(
            (total as i64 - 1000).abs() < 112,
            "{total} of 2000 augmented"
        );
    }
}
