//! Streaming embedding of a corpus: one result per input, handed to the caller as soon as it is ready.
//!
//! Decoding (read, mix to mono, resample, normalise) runs in a background thread that stays at most
//! [`PREFETCH`] clips ahead of the model through a bounded channel, so the model never waits on the
//! decoder when decoding is faster than the forward, and host memory holds at most `PREFETCH + 2` clips
//! whatever the corpus size. A clip that cannot be read, decoded or embedded is that input's `Err` (its
//! message says why; the input says which file); the corpus goes on. On a CUDA device, consecutive
//! clips of equal length (without `chunk`) run as one batch of up to [`super::clip::MAX_DEVICE_BATCH`],
//! and the chunks of a long clip are batched likewise (so host memory then holds up to that many clips).

use super::clip::{embed_same_length_on, embed_samples_on, zero_mean_unit_var, Backend, Pool};
use super::inputs::Input;
use crate::tensor::Tensor;
use anyhow::{anyhow, Result};
use std::sync::mpsc;

/// Decoded clips waiting for the model.
pub const PREFETCH: usize = 2;

/// How every clip of a corpus is embedded.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedSettings {
    /// Hidden states kept (0 = before the transformer), see [`super::parse_layers`].
    pub layers: Vec<usize>,
    pub pool: Pool,
    /// transformers' zero-mean / unit-variance normalisation of each clip before the model.
    pub normalize: bool,
    /// Cut clips into pieces of this many samples (at the model's rate); results concatenated in time.
    pub chunk: Option<usize>,
}

/// One input's result.
#[derive(Debug)]
pub struct Embedding {
    /// f32 `[layers, frames, hidden]` (`Pool::None`) or `[layers, hidden]` (`Pool::Mean`).
    pub tensor: Tensor,
    /// Length of the decoded clip in seconds.
    pub audio_seconds: f64,
}

/// Totals of one [`embed_corpus`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CorpusStats {
    pub embedded: usize,
    pub failed: usize,
    /// Audio embedded (failed inputs not counted).
    pub audio_seconds: f64,
}

/// Reads one input as mono at `rate`, normalised if asked. A decoder panic on a malformed file is
/// turned into that input's error rather than taking the corpus down.
pub fn decode(input: &Input, rate: u32, normalize: bool) -> Result<Vec<f32>> {
    let read = std::panic::catch_unwind(|| crate::audio::wav::load_mono(&input.path, rate));
    let mut samples = match read {
        Ok(r) => r?,
        Err(_) => return Err(anyhow!("the audio decoder panicked on this file")),
    };
    if normalize {
        zero_mean_unit_var(&mut samples);
    }
    Ok(samples)
}

/// One result per clip of `group` (clips of equal length when there are several): one device batch,
/// or clip by clip if the batch fails, so that each clip gets its own error.
fn embed_group(
    backend: &Backend,
    settings: &EmbedSettings,
    group: &[(&Input, Vec<f32>)],
) -> Vec<Result<Tensor>> {
    let one = |samples: &[f32]| {
        embed_samples_on(
            backend,
            samples,
            &settings.layers,
            settings.pool,
            settings.chunk,
        )
    };
    if group.len() > 1 {
        let clips: Vec<&[f32]> = group.iter().map(|(_, s)| s.as_slice()).collect();
        if let Ok(tensors) = embed_same_length_on(backend, &clips, &settings.layers, settings.pool)
        {
            return tensors.into_iter().map(Ok).collect();
        }
    }
    group.iter().map(|(_, s)| one(s)).collect()
}

/// Embeds every input in order and calls `on_result(input, result)` for each as soon as it is done.
///
/// A failed input is an `Err` passed to `on_result` (the message is the reason, e.g. "cannot read WAV
/// file x.wav: ..."), never an abort. An `Err` returned by `on_result` stops the run and is returned
/// (for the caller's own fatal errors, e.g. a full disk). Skipping finished inputs (resume) is the
/// caller's choice: pass only the inputs still to do.
pub fn embed_corpus(
    inputs: &[Input],
    settings: &EmbedSettings,
    backend: &Backend,
    mut on_result: impl FnMut(&Input, Result<Embedding>) -> Result<()>,
) -> Result<CorpusStats> {
    let rate = backend.config().sample_rate;
    let normalize = settings.normalize;
    let mut stats = CorpusStats::default();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<f32>>>(PREFETCH);
        scope.spawn(move || {
            for input in inputs {
                // The receiver is gone when the caller stopped the run: stop decoding too.
                if tx.send(decode(input, rate, normalize)).is_err() {
                    break;
                }
            }
        });
        let batch_clips = settings.chunk.is_none() && backend.max_batch() > 1;
        let mut decoded = inputs.iter().zip(rx.iter()).peekable();
        while let Some((input, first)) = decoded.next() {
            let samples = match first {
                Ok(s) => s,
                Err(e) => {
                    stats.failed += 1;
                    on_result(input, Err(e))?;
                    continue;
                }
            };
            // On a device, the decoded clips that follow with the same length join this one's batch.
            let mut group = vec![(input, samples)];
            while batch_clips && group.len() < backend.max_batch() {
                match decoded.peek() {
                    Some((_, Ok(next))) if next.len() == group[0].1.len() => {
                        let (i, next) = decoded.next().expect("peeked");
                        group.push((i, next.expect("peeked Ok")));
                    }
                    _ => break,
                }
            }
            for ((input, samples), result) in
                group.iter().zip(embed_group(backend, settings, &group))
            {
                let result = result.map(|tensor| Embedding {
                    tensor,
                    audio_seconds: samples.len() as f64 / rate as f64,
                });
                match &result {
                    Ok(e) => {
                        stats.embedded += 1;
                        stats.audio_seconds += e.audio_seconds;
                    }
                    Err(_) => stats.failed += 1,
                }
                on_result(input, result)?;
            }
        }
        Ok(stats)
    })
}
