//! Embeddings of one clip: the requested hidden states of a MERT forward, optionally chunked in time and
//! mean-pooled, on the CPU tape or on a CUDA device (GPU or emulator).

use crate::autograd::Tape;
use crate::device::Device;
use crate::model::config::MertConfig;
use crate::model::cuda_mert::{CudaMert, Precision};
use crate::model::mert::{ForwardOptions, Mert};
use crate::tensor::Tensor;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Time pooling of the hidden states.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pool {
    /// [layers, frames, hidden].
    None,
    /// Time-averaged [layers, hidden] (chunks: the mean of the per-chunk means).
    Mean,
}

impl Pool {
    /// `none` | `mean`.
    pub fn parse(s: &str) -> Result<Pool> {
        match s {
            "none" => Ok(Pool::None),
            "mean" => Ok(Pool::Mean),
            other => bail!("--pool must be none or mean, got {other:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pool::None => "none",
            Pool::Mean => "mean",
        }
    }
}

/// `all` (0..=num_layers, 0 = before the transformer) or a comma-separated list like `0,6,12`.
pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    if spec == "all" {
        return Ok((0..=num_layers).collect());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let l: usize = part
            .trim()
            .parse()
            .with_context(|| format!("--layers: {part:?} is not a layer index"))?;
        ensure!(
            l <= num_layers,
            "--layers: layer {l} does not exist (the model has hidden states 0..={num_layers})"
        );
        out.push(l);
    }
    ensure!(!out.is_empty(), "--layers is empty");
    Ok(out)
}

/// transformers' `zero_mean_unit_var_norm`: (x - mean) / sqrt(var + 1e-7), population variance.
pub fn zero_mean_unit_var(x: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-7).sqrt();
    for v in x {
        *v = ((*v as f64 - mean) * inv) as f32;
    }
}

/// Where the forward runs: the CPU tape, or the model resident on a CUDA device (GPU or emulator).
pub enum Backend<'a> {
    Cpu(&'a Mert),
    Cuda(Box<CudaMert>),
}

impl<'a> Backend<'a> {
    /// The CPU tape for `Device::Cpu`, else the model copied to the CUDA device with `precision`.
    pub fn for_device(
        device: &Device,
        model: &'a Mert,
        precision: Precision,
    ) -> Result<Backend<'a>> {
        match device {
            Device::Cpu => {
                ensure!(
                    precision == Precision::F32,
                    "--precision {precision} needs a CUDA device (--device cuda or emu); the CPU runs f32"
                );
                Ok(Backend::Cpu(model))
            }
            Device::Cuda(dev) => {
                let mut m = CudaMert::new(dev, model)?;
                m.precision = precision;
                Ok(Backend::Cuda(Box::new(m)))
            }
        }
    }

    pub fn config(&self) -> &MertConfig {
        match self {
            Backend::Cpu(m) => &m.config,
            Backend::Cuda(m) => &m.config,
        }
    }

    /// Valid frames and the requested hidden states [frames, hidden] of each piece; all pieces have
    /// the same length. On a CUDA device they run as one batch (no padding, so no mask).
    fn hidden_states(
        &self,
        pieces: &[&[f32]],
        layers: &[usize],
    ) -> Result<Vec<(usize, Vec<Vec<f32>>)>> {
        match self {
            Backend::Cpu(model) => pieces
                .iter()
                .map(|piece| {
                    let mut tape = Tape::no_grad();
                    let audio = Tensor::from_f32(&[1, piece.len()], piece.to_vec());
                    let out = model.forward(&mut tape, &audio, None, &ForwardOptions::default())?;
                    let hs = layers.iter().map(|&l| out.hidden_states[l].data().to_vec());
                    Ok((out.frame_lengths[0], hs.collect()))
                })
                .collect(),
            Backend::Cuda(model) => {
                let (b, len) = (pieces.len(), pieces[0].len());
                ensure!(
                    pieces.iter().all(|p| p.len() == len),
                    "a device batch needs pieces of equal length"
                );
                let audio = pieces.concat();
                let out = model.forward(&audio, b, len, None, &ForwardOptions::default(), false)?;
                let states: Vec<Vec<f32>> = layers
                    .iter()
                    .map(|&l| out.hidden_state(&model.dev, l))
                    .collect::<Result<_>>()?;
                // Each state is [b, frames, hidden]: split it per piece.
                Ok((0..b)
                    .map(|i| {
                        let per: Vec<Vec<f32>> = states
                            .iter()
                            .map(|s| {
                                let n = s.len() / b;
                                s[i * n..(i + 1) * n].to_vec()
                            })
                            .collect();
                        (out.frame_lengths[i], per)
                    })
                    .collect())
            }
        }
    }

    /// Pieces per forward: equal-length pieces are batched on a CUDA device.
    pub fn max_batch(&self) -> usize {
        match self {
            Backend::Cpu(_) => 1,
            Backend::Cuda(_) => MAX_DEVICE_BATCH,
        }
    }
}

/// Equal-length chunks of one clip run together on a CUDA device, this many per forward (8 x 30 s
/// keeps the 13 hidden states of MERT-v1-95M under 1 GB of device memory).
pub const MAX_DEVICE_BATCH: usize = 8;

/// Embeddings of one clip on the CPU: [layers.len(), frames, hidden] (or [layers.len(), hidden] pooled).
pub fn embed_samples(
    model: &Mert,
    samples: &[f32],
    layers: &[usize],
    pool: Pool,
    chunk: Option<usize>,
) -> Result<Tensor> {
    embed_samples_on(&Backend::Cpu(model), samples, layers, pool, chunk)
}

/// [`embed_samples`] on any backend.
pub fn embed_samples_on(
    model: &Backend,
    samples: &[f32],
    layers: &[usize],
    pool: Pool,
    chunk: Option<usize>,
) -> Result<Tensor> {
    let cfg = model.config();
    let min = cfg.min_samples();
    ensure!(
        samples.len() >= min,
        "audio has {} samples, fewer than the {min} the model needs for one frame",
        samples.len()
    );
    let chunks: Vec<&[f32]> = match chunk {
        None => vec![samples],
        Some(c) => {
            ensure!(
                c >= min,
                "--chunk-seconds gives {c} samples, fewer than the {min} needed for one frame"
            );
            // A trailing piece too short for one frame is dropped.
            samples
                .chunks(c)
                .filter(|piece| piece.len() >= min)
                .collect()
        }
    };
    let mut per_layer: Vec<Vec<f32>> = vec![Vec::new(); layers.len()];
    let mut frames_total = 0;
    // Consecutive pieces of equal length (all but a shorter last one) share a forward; each batch is
    // folded into the result before the next runs, so pooled output of long audio stays small.
    let mut start = 0;
    while start < chunks.len() {
        let len = chunks[start].len();
        let mut end = start + 1;
        while end < chunks.len() && end - start < model.max_batch() && chunks[end].len() == len {
            end += 1;
        }
        for (frames, states) in model.hidden_states(&chunks[start..end], layers)? {
            frames_total += frames;
            fold_piece(
                &mut per_layer,
                frames,
                &states,
                pool,
                cfg.hidden_size,
                chunks.len(),
            );
        }
        start = end;
    }
    Ok(assemble(per_layer, frames_total, pool, cfg.hidden_size))
}

/// Adds one piece's hidden states to the per-layer result: appended in time (`None`), or its time mean
/// divided by the number of pieces (`Mean`: the mean of the per-piece means).
fn fold_piece(
    per_layer: &mut [Vec<f32>],
    frames: usize,
    states: &[Vec<f32>],
    pool: Pool,
    h: usize,
    pieces: usize,
) {
    for (dst, hs) in per_layer.iter_mut().zip(states) {
        match pool {
            Pool::None => dst.extend_from_slice(hs),
            Pool::Mean => {
                let mut mean = vec![0.0f64; h];
                for row in hs.chunks_exact(h) {
                    for (m, &v) in mean.iter_mut().zip(row) {
                        *m += v as f64;
                    }
                }
                if dst.is_empty() {
                    dst.resize(h, 0.0);
                }
                for (d, m) in dst.iter_mut().zip(&mean) {
                    *d += (m / frames as f64 / pieces as f64) as f32;
                }
            }
        }
    }
}

fn assemble(per_layer: Vec<Vec<f32>>, frames: usize, pool: Pool, h: usize) -> Tensor {
    let n = per_layer.len();
    let data: Vec<f32> = per_layer.concat();
    match pool {
        Pool::None => Tensor::from_f32(&[n, frames, h], data),
        Pool::Mean => Tensor::from_f32(&[n, h], data),
    }
}

/// Unchunked embeddings of several clips of the same length in one forward (one device batch; the CPU
/// runs them one by one). Each result equals [`embed_samples_on`] of that clip without chunking.
pub fn embed_same_length_on(
    model: &Backend,
    clips: &[&[f32]],
    layers: &[usize],
    pool: Pool,
) -> Result<Vec<Tensor>> {
    let cfg = model.config();
    let min = cfg.min_samples();
    ensure!(!clips.is_empty(), "no clips to embed");
    ensure!(
        clips[0].len() >= min,
        "audio has {} samples, fewer than the {min} the model needs for one frame",
        clips[0].len()
    );
    let out = model.hidden_states(clips, layers)?;
    Ok(out
        .into_iter()
        .map(|(frames, states)| {
            let mut per_layer = vec![Vec::new(); layers.len()];
            fold_piece(&mut per_layer, frames, &states, pool, cfg.hidden_size, 1);
            assemble(per_layer, frames, pool, cfg.hidden_size)
        })
        .collect())
}

/// Tensor name for an input: its file stem.
pub fn tensor_name(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", path.display()))
}
