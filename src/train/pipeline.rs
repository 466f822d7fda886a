//! The training input pipeline: each micro-batch (crops, teacher codes, CQT target or clean audio for
//! the device, mask, in-batch mixup) prepared ahead of the step by background workers.
//!
//! Every batch is a pure function of (seed, step, micro) ([`BatchRecipe::prepare`]), so the workers
//! may finish in any order: a reorder buffer hands them to the loop strictly in (step, micro) order,
//! and the batches are the same for any number of workers, and after a resume at step s (the queue
//! then starts at (s, 0)). Workers claim at most `depth` batches beyond the one the loop waits for
//! (bounded memory) and never beyond the run's last (step, micro). A worker's error reaches the loop
//! at its place in the order; dropping the [`Prefetcher`] stops the workers after their current batch.

use crate::model::config::MertConfig;
use crate::tensor::Tensor;
use crate::train::config::TrainConfig;
use crate::train::data::{draw_seed, DataPipeline};
use crate::train::masking::{compute_mask_indices, MaskRng};
use crate::train::mixup::{inbatch_noise_mixup, MixupConfig};
use crate::train::objective::PretrainBatch;
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

/// One micro-batch ready for the step, with what the metrics need.
pub struct PreparedBatch {
    pub step: usize,
    pub micro: usize,
    pub batch: PretrainBatch,
    /// Seconds of audio in the batch.
    pub audio_seconds: f64,
    /// Wall time a worker spent preparing it.
    pub prepare_time: Duration,
}

/// Everything a worker needs to prepare the batch of any (step, micro).
pub struct BatchRecipe<'a> {
    pub cfg: &'a TrainConfig,
    pub data: &'a DataPipeline,
    /// The model's config (frames per crop, for the mask).
    pub model: MertConfig,
    /// Leave the CQT target to the CUDA device: the batch carries the clean audio instead.
    pub device_cqt: bool,
}

impl BatchRecipe<'_> {
    /// The micro-batch `micro` of global step `step`: what the loop used to build inline.
    pub fn prepare(&self, step: usize, micro: usize) -> Result<PreparedBatch> {
        let t0 = Instant::now();
        let (cfg, o) = (self.cfg, &self.cfg.objective);
        let stage = &cfg.stages[cfg.locate(step).0];
        let crops = self
            .data
            .crops(stage, step, micro, stage.micro_batch(), !self.device_cqt)
            .with_context(|| format!("preparing micro-batch {micro} of step {step}"))?;
        let frames = self.model.frames_for_samples(crops.len);
        let mut mrng = MaskRng::new(draw_seed(cfg.seed, step, micro, 0x3A5C));
        let mask: Vec<u8> = compute_mask_indices(
            crops.batch,
            frames,
            &vec![frames; crops.batch],
            o.mask_prob,
            o.mask_length,
            o.mask_min_spans,
            &mut mrng,
        )
        .into_iter()
        .map(u8::from)
        .collect();
        let mixup = MixupConfig {
            prob: o.mixup_prob,
            min_samples: o.mixup_min_samples,
            max_samples: o.mixup_max_samples,
            min_count: o.mixup_min_count,
            max_count: o.mixup_max_count,
        };
        let mut audio = crops.audio.clone();
        inbatch_noise_mixup(
            &mut audio,
            crops.batch,
            crops.len,
            &mixup,
            &mut MaskRng::new(draw_seed(cfg.seed, step, micro, 0x313C)),
        );
        let audio_seconds = (crops.batch * crops.len) as f64 / self.data.sample_rate() as f64;
        let batch = PretrainBatch {
            audio: Tensor::from_f32(&[crops.batch, crops.len], audio),
            codes: crops.codes,
            code_frames: crops.code_frames,
            codebook_size: o.codebook_size,
            cqt: crops.cqt,
            cqt_frames: crops.cqt_frames,
            mask,
            clean_audio: self.device_cqt.then_some(crops.audio),
        };
        Ok(PreparedBatch {
            step,
            micro,
            batch,
            audio_seconds,
            prepare_time: t0.elapsed(),
        })
    }
}

/// The (step, micro) pairs of steps `start..end` in the order the loop consumes them.
pub fn batch_order(cfg: &TrainConfig, start: usize, end: usize) -> Vec<(usize, usize)> {
    (start..end)
        .flat_map(|step| {
            let accumulation = cfg.stages[cfg.locate(step).0].grad_accumulation;
            (0..accumulation).map(move |m| (step, m))
        })
        .collect()
}

/// Default worker count: one core is left to the step, at most 4.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).clamp(1, 4)
}

/// Default queue depth: two batches per worker, at least 4.
pub fn default_depth(workers: usize) -> usize {
    (2 * workers).max(4)
}

/// State shared by the workers and the loop.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a batch lands (the loop waits on it).
    landed: Condvar,
    /// Signalled when the loop takes a batch or stops (workers wait on it for room).
    room: Condvar,
}

struct QueueState {
    /// Index (into the order) of the next batch a worker will claim.
    next_claim: usize,
    /// Index of the next batch the loop takes.
    next_take: usize,
    /// Finished batches not yet taken, by index.
    done: BTreeMap<usize, Result<PreparedBatch>>,
    stop: bool,
}

/// Batches of a run in (step, micro) order, prepared by `workers` background threads (0: inline, on
/// the loop's thread).
pub struct Prefetcher<'a> {
    recipe: &'a BatchRecipe<'a>,
    order: Arc<Vec<(usize, usize)>>,
    /// None when inline.
    queue: Option<Arc<Queue>>,
    next: usize,
}

impl<'a> Prefetcher<'a> {
    /// Starts `workers` threads in `scope` preparing the batches of `order`, at most `depth` (>= 1)
    /// claimed ahead of the one the loop takes next.
    pub fn start<'scope>(
        scope: &'scope Scope<'scope, 'a>,
        recipe: &'a BatchRecipe<'a>,
        order: Vec<(usize, usize)>,
        workers: usize,
        depth: usize,
    ) -> Prefetcher<'a> {
        let order = Arc::new(order);
        let queue = (workers > 0).then(|| {
            Arc::new(Queue {
                state: Mutex::new(QueueState {
                    next_claim: 0,
                    next_take: 0,
                    done: BTreeMap::new(),
                    stop: false,
                }),
                landed: Condvar::new(),
                room: Condvar::new(),
            })
        });
        if let Some(q) = &queue {
            for _ in 0..workers {
                let (q, order) = (q.clone(), order.clone());
                scope.spawn(move || worker(&q, recipe, &order, depth.max(1)));
            }
        }
        Prefetcher {
            recipe,
            order,
            queue,
            next: 0,
        }
    }

    /// The next batch in order and how long the caller waited for it (inline: the preparation).
    /// Past the end of the order: an error.
    pub fn next_batch(&mut self) -> Result<(PreparedBatch, Duration)> {
        let t0 = Instant::now();
        let index = self.next;
        let &(step, micro) = self.order.get(index).ok_or_else(|| {
            anyhow!(
                "input pipeline: no batch {index} (the run has {})",
                self.order.len()
            )
        })?;
        self.next += 1;
        let prepared = match &self.queue {
            None => self.recipe.prepare(step, micro)?,
            Some(q) => {
                let mut s = q.state.lock().unwrap_or_else(|e| e.into_inner());
                let result = loop {
                    if let Some(r) = s.done.remove(&index) {
                        break r;
                    }
                    s = q.landed.wait(s).unwrap_or_else(|e| e.into_inner());
                };
                s.next_take = index + 1;
                q.room.notify_all();
                result?
            }
        };
        Ok((prepared, t0.elapsed()))
    }
}

impl Drop for Prefetcher<'_> {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            q.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            q.room.notify_all();
        }
    }
}

/// A worker: claims the next index while it is within `depth` of the loop, prepares it, files it.
fn worker(q: &Queue, recipe: &BatchRecipe<'_>, order: &[(usize, usize)], depth: usize) {
    loop {
        let index = {
            let mut s = q.state.lock().unwrap_or_else(|e| e.into_inner());
            while !s.stop && s.next_claim < order.len() && s.next_claim >= s.next_take + depth {
                s = q.room.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.stop || s.next_claim >= order.len() {
                return;
            }
            s.next_claim += 1;
            s.next_claim - 1
        };
        let (step, micro) = order[index];
        // A panic is an error of this batch, not a loop left waiting forever.
        let result =
            catch_unwind(AssertUnwindSafe(|| recipe.prepare(step, micro))).unwrap_or_else(|_| {
                Err(anyhow!(
                    "input pipeline: a worker panicked preparing micro-batch {micro} of step {step}"
                ))
            });
        let mut s = q.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done.insert(index, result);
        q.landed.notify_all();
    }
}
