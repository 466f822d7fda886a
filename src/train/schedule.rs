//! Learning-rate schedules, as a function of the optimizer-update index (0-based: the LR used by the
//! `update`-th call of `AdamW::step`).
//!
//! * `StagedCosine`: per stage, linear warm-up then cosine decay from `eta_max` to `eta_min`, re-warmed at
//!   the start of every stage (the stage-local index restarts at 0). CultureMERT's two-stage recipe.
//! * `PolynomialDecay`: fairseq's `polynomial_decay` (MERT's from-scratch recipe): linear warm-up to the
//!   peak, then (1 - progress)^power decay to `end_lr` at `total` updates.

use anyhow::{ensure, Result};

/// One stage of `StagedCosine`.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineStage {
    /// Optimizer updates in this stage (N).
    pub steps: usize,
    /// Warm-up updates (W <= N).
    pub warmup: usize,
    pub eta_max: f64,
    pub eta_min: f64,
}

impl CosineStage {
    /// LR of stage-local update `s` (0-based). With u = s + 1: warm-up `eta_max * u / W` for u <= W (so
    /// the W-th update runs at the peak), then `eta_min + (eta_max - eta_min) * (1 + cos(pi * (u - W) /
    /// (N - W))) / 2`, which reaches `eta_min` at the stage's last update.
    pub fn lr(&self, s: usize) -> f64 {
        let (u, w, n) = (
            s.min(self.steps.saturating_sub(1)) + 1,
            self.warmup,
            self.steps,
        );
        if u <= w {
            return self.eta_max * u as f64 / w as f64;
        }
        let progress = (u - w) as f64 / (n - w) as f64;
        self.eta_min
            + (self.eta_max - self.eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Consecutive stages; update indices run across stages (stage 2 starts at `stages[0].steps`).
#[derive(Clone, Debug, PartialEq)]
pub struct StagedCosine {
    pub stages: Vec<CosineStage>,
}

impl StagedCosine {
    pub fn new(stages: Vec<CosineStage>) -> Result<Self> {
        ensure!(!stages.is_empty(), "a schedule needs at least one stage");
        for (i, s) in stages.iter().enumerate() {
            ensure!(s.steps > 0, "stage {i}: steps must be > 0");
            ensure!(
                s.warmup <= s.steps,
                "stage {i}: warm-up {} exceeds its {} steps",
                s.warmup,
                s.steps
            );
            ensure!(
                s.eta_max >= 0.0 && s.eta_min >= 0.0,
                "stage {i}: learning rates must be >= 0"
            );
        }
        Ok(StagedCosine { stages })
    }

    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    /// (stage index, stage-local update index) of global update `update`; past the end, the last update of
    /// the last stage.
    pub fn locate(&self, update: usize) -> (usize, usize) {
        let mut rest = update;
        for (i, s) in self.stages.iter().enumerate() {
            if rest < s.steps {
                return (i, rest);
            }
            rest -= s.steps;
        }
        let last = self.stages.len() - 1;
        (last, self.stages[last].steps - 1)
    }

    /// LR of global update `update`.
    pub fn lr(&self, update: usize) -> f64 {
        let (stage, s) = self.locate(update);
        self.stages[stage].lr(s)
    }
}

/// fairseq `PolynomialDecayLRSchedule`.
#[derive(Clone, Debug, PartialEq)]
pub struct PolynomialDecay {
    pub peak_lr: f64,
    pub end_lr: f64,
    pub warmup: usize,
    pub total: usize,
    pub power: f64,
}

impl PolynomialDecay {
    /// MERT-v1-95M: peak 5e-4, warm-up 32,000, linear decay to 0 at 400,000 updates.
    pub fn mert_95m() -> Self {
        PolynomialDecay {
            peak_lr: 5e-4,
            end_lr: 0.0,
            warmup: 32_000,
            total: 400_000,
            power: 1.0,
        }
    }

    /// fairseq's `step_update(num_updates)`: the LR set after `num_updates` updates.
    fn after(&self, num_updates: usize) -> f64 {
        if self.warmup > 0 && num_updates <= self.warmup {
            self.peak_lr * num_updates as f64 / self.warmup as f64
        } else if num_updates >= self.total {
            self.end_lr
        } else {
            let remaining =
                1.0 - (num_updates - self.warmup) as f64 / (self.total - self.warmup) as f64;
            (self.peak_lr - self.end_lr) * remaining.powf(self.power) + self.end_lr
        }
    }

    /// LR of update `update` (0-based). fairseq starts at peak/W (its constructor), then sets the LR after
    /// each update from the new count, so updates 0 and 1 both run at peak/W.
    pub fn lr(&self, update: usize) -> f64 {
        if self.warmup > 0 {
            self.after(update.max(1))
        } else {
            self.after(update)
        }
    }
}
