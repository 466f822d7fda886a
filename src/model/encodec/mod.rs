//! EnCodec 24 kHz encoder + residual VQ (the acoustic teacher of MERT, docs/objective.md section 7),
//! inference only, on the CPU, loaded from a transformers `EncodecModel` directory (config.json +
//! model.safetensors, or pytorch_model.bin). Only `encoder.*` and `quantizer.layers.*.codebook.embed`
//! are read; the decoder and the codebooks' training buffers are ignored.
//!
//! Encoder (HF `encoder.layers.i`): conv(1 -> F, k7); per downsampling ratio r in 2, 4, 5, 8:
//! residual blocks, ELU, conv(C -> 2C, k 2r, stride r); LSTM + skip; ELU; conv(16F -> D, k7).
//! Whole tracks are encoded in one pass (the LSTM and the causal padding see all earlier audio).

pub mod config;
pub mod lstm;
pub mod rvq;
pub mod seanet;

pub use config::EncodecConfig;

use super::teacher::Teacher;
use crate::io::safetensors::RawTensors;
use crate::ops::weight_norm::weight_norm_forward;
use anyhow::{bail, ensure, Context, Result};
use lstm::{Lstm, LstmLayer};
use rvq::Rvq;
use seanet::{elu_inplace, ResBlock, SConv1d};
use std::path::Path;

/// MERT's setting: 6 kbps = 8 codebooks of the 24 kHz model.
pub const MERT_BANDWIDTH_KBPS: f64 = 6.0;

/// One stage of the encoder, in HF layer order.
#[derive(Clone, Debug)]
enum Stage {
    Conv(SConv1d),
    Res(ResBlock),
    Elu,
    Lstm(Lstm),
}

pub struct EncodecTeacher {
    pub config: EncodecConfig,
    stages: Vec<Stage>,
    rvq: Rvq,
    n_q: usize,
    bandwidth: f64,
    /// FNV-1a of the weight file, so label files record which model made them.
    fingerprint: u64,
}

/// Checked access to the checkpoint's tensors by HF name.
struct Weights<'a> {
    raw: &'a RawTensors,
    file: &'a Path,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, data) = self.raw.get(name).with_context(|| {
            format!(
                "{}: missing tensor `{name}` (shape {shape:?})",
                self.file.display()
            )
        })?;
        ensure!(
            s.as_slice() == shape,
            "{}: tensor `{name}` has shape {s:?}, expected {shape:?}",
            self.file.display()
        );
        Ok(data.to_f32_vec())
    }

    /// A weight-normed conv `prefix.conv` [out, in, k]: weight_g/weight_v or the parametrizations
    /// spelling (original0 = g, original1 = v); w[o] = g[o] v[o] / |v[o]|.
    fn conv(
        &self,
        prefix: &str,
        shape: [usize; 3],
        stride: usize,
        dilation: usize,
    ) -> Result<SConv1d> {
        let p = format!("{prefix}.conv");
        let legacy = format!("{p}.weight_g");
        let (g_name, v_name) = if self.raw.contains_key(&legacy) {
            (legacy, format!("{p}.weight_v"))
        } else if self
            .raw
            .contains_key(&format!("{p}.parametrizations.weight.original0"))
        {
            (
                format!("{p}.parametrizations.weight.original0"),
                format!("{p}.parametrizations.weight.original1"),
            )
        } else {
            bail!(
                "{}: missing tensor `{p}.weight_g` (or `{p}.parametrizations.weight.original0`): \
                 expected a weight-normed conv [{}, {}, {}]",
                self.file.display(),
                shape[0],
                shape[1],
                shape[2]
            );
        };
        let g = self.get(&g_name, &[shape[0], 1, 1])?;
        let v = self.get(&v_name, &shape)?;
        let bias = self.get(&format!("{p}.bias"), &[shape[0]])?;
        let mut w = vec![0.0f32; v.len()];
        let mut norms = vec![0.0f32; shape[0]];
        weight_norm_forward(&mut w, &mut norms, &g, &v, shape, 0);
        if let Some(o) = norms.iter().position(|&n| n == 0.0) {
            bail!(
                "{}: `{v_name}` row {o} is all zeros (weight norm undefined)",
                self.file.display()
            );
        }
        Ok(SConv1d::new(&w, bias, shape, stride, dilation))
    }
}

impl EncodecTeacher {
    /// Loads an HF `EncodecModel` directory for MERT's 6 kbps (8 codebooks for the 24 kHz model).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_bandwidth(dir, MERT_BANDWIDTH_KBPS)
    }

    /// `bandwidth` in kbps must be one of the config's `target_bandwidths` (as HF `encode` demands).
    pub fn load_with_bandwidth(dir: &Path, bandwidth: f64) -> Result<Self> {
        let config = EncodecConfig::from_file(&dir.join("config.json"))?;
        ensure!(
            config.target_bandwidths.contains(&bandwidth),
            "{}: bandwidth {bandwidth} kbps is not one of the model's target_bandwidths {:?}",
            dir.display(),
            config.target_bandwidths
        );
        let (file, bytes) = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "{}: no model.safetensors or pytorch_model.bin",
                    dir.display()
                )
            })
            .and_then(|p| {
                let b = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                Ok((p, b))
            })?;
        let raw = if file.extension().is_some_and(|e| e == "safetensors") {
            parse_safetensors(&file, &bytes)?
        } else {
            crate::model::torch_bin::read_as_raw_tensors(&file)?
        };
        let mut t = Self::from_tensors(config, &raw, &file, bandwidth)?;
        t.fingerprint = fnv1a(&bytes);
        Ok(t)
    }

    fn from_tensors(
        config: EncodecConfig,
        raw: &RawTensors,
        file: &Path,
        bandwidth: f64,
    ) -> Result<Self> {
        let w = Weights { raw, file };
        let cfg = &config;
        // The HF layer index of the next stage is the number of stages so far.
        let mut stages: Vec<Stage> = Vec::new();
        let mut ch = cfg.num_filters;
        let conv0 = w.conv("encoder.layers.0", [ch, 1, cfg.kernel_size], 1, 1)?;
        stages.push(Stage::Conv(conv0));
        for &ratio in cfg.upsampling_ratios.iter().rev() {
            for j in 0..cfg.num_residual_layers {
                let p = format!("encoder.layers.{}", stages.len());
                let hidden = ch / cfg.compress;
                let dilation = cfg.dilation_growth_rate.pow(j as u32);
                let k = cfg.residual_kernel_size;
                let conv_a = w.conv(&format!("{p}.block.1"), [hidden, ch, k], 1, dilation)?;
                let conv_b = w.conv(&format!("{p}.block.3"), [ch, hidden, 1], 1, 1)?;
                let shortcut = match cfg.use_conv_shortcut {
                    true => Some(w.conv(&format!("{p}.shortcut"), [ch, ch, 1], 1, 1)?),
                    false => None,
                };
                stages.push(Stage::Res(ResBlock {
                    conv_a,
                    conv_b,
                    shortcut,
                }));
            }
            stages.push(Stage::Elu);
            let p = format!("encoder.layers.{}", stages.len());
            let down = w.conv(&p, [2 * ch, ch, 2 * ratio], ratio, 1)?;
            stages.push(Stage::Conv(down));
            ch *= 2;
        }
        let p = format!("encoder.layers.{}.lstm", stages.len());
        let mut lstm_layers = Vec::new();
        for l in 0..cfg.num_lstm_layers {
            let b_ih = w.get(&format!("{p}.bias_ih_l{l}"), &[4 * ch])?;
            let b_hh = w.get(&format!("{p}.bias_hh_l{l}"), &[4 * ch])?;
            lstm_layers.push(LstmLayer {
                w_ih: w.get(&format!("{p}.weight_ih_l{l}"), &[4 * ch, ch])?,
                w_hh: w.get(&format!("{p}.weight_hh_l{l}"), &[4 * ch, ch])?,
                bias: b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect(),
                input_size: ch,
                hidden: ch,
            });
        }
        stages.push(Stage::Lstm(Lstm {
            layers: lstm_layers,
        }));
        stages.push(Stage::Elu);
        let p = format!("encoder.layers.{}", stages.len());
        let last = w.conv(&p, [cfg.hidden_size, ch, cfg.last_kernel_size], 1, 1)?;
        stages.push(Stage::Conv(last));

        let n_q = cfg.quantizers_for_bandwidth(bandwidth);
        ensure!(
            n_q <= cfg.num_quantizers(),
            "{bandwidth} kbps needs {n_q} codebooks but the config has {}",
            cfg.num_quantizers()
        );
        let codebooks = (0..n_q)
            .map(|q| {
                w.get(
                    &format!("quantizer.layers.{q}.codebook.embed"),
                    &[cfg.codebook_size, cfg.codebook_dim],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rvq = Rvq::new(codebooks, cfg.codebook_size, cfg.codebook_dim);
        Ok(EncodecTeacher {
            config,
            stages,
            rvq,
            n_q,
            bandwidth,
            fingerprint: 0,
        })
    }

    /// Number of code frames for `len` samples: ceil(len / hop).
    pub fn frames(&self, len: usize) -> usize {
        len.div_ceil(self.config.hop())
    }

    /// Encoder activations: (embedding [D, T], LSTM block input [C, T]).
    pub fn embed_with_pre_lstm(&self, samples: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        ensure!(
            !samples.is_empty(),
            "EnCodec: cannot encode an empty signal"
        );
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            bail!("EnCodec: sample {i} is {} (not finite)", samples[i]);
        }
        let (mut x, mut len, mut ch) = (samples.to_vec(), samples.len(), 1usize);
        let mut pre_lstm = Vec::new();
        for stage in &self.stages {
            match stage {
                Stage::Conv(c) => {
                    x = c.forward(&x, len);
                    len = c.out_len(len);
                    ch = c.out_channels;
                }
                Stage::Res(r) => x = r.forward(&x, len),
                Stage::Elu => elu_inplace(&mut x),
                Stage::Lstm(l) => {
                    pre_lstm = x.clone();
                    x = l.forward(&x, ch, len);
                }
            }
        }
        debug_assert_eq!(len, self.frames(samples.len()));
        Ok((x, pre_lstm))
    }

    /// Encoder output embedding [D, T].
    pub fn embed(&self, samples: &[f32]) -> Result<Vec<f32>> {
        Ok(self.embed_with_pre_lstm(samples)?.0)
    }

    /// Codes of an embedding [D, T] -> [n_q, T].
    pub fn quantize(&self, emb: &[f32], frames: usize) -> Vec<u16> {
        self.rvq.encode(emb, frames, self.n_q)
    }
}

impl Teacher for EncodecTeacher {
    fn name(&self) -> &str {
        "encodec"
    }
    fn codebooks(&self) -> usize {
        self.n_q
    }
    fn codebook_size(&self) -> usize {
        self.config.codebook_size
    }
    fn sample_rate(&self) -> u32 {
        self.config.sampling_rate
    }
    fn hop(&self) -> usize {
        self.config.hop()
    }
    fn encode(&self, samples: &[f32]) -> Result<Vec<u16>> {
        let emb = self.embed(samples)?;
        Ok(self.quantize(&emb, self.frames(samples.len())))
    }
    fn params(&self) -> String {
        format!(
            "encodec-v1 bandwidth={} n_q={} weights=fnv1a:{:016x} whole-track",
            self.bandwidth, self.n_q, self.fingerprint
        )
    }
}

fn parse_safetensors(file: &Path, bytes: &[u8]) -> Result<RawTensors> {
    use crate::tensor::{CpuData, DType};
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", file.display()))?;
    let mut out = RawTensors::new();
    for (name, view) in st.tensors() {
        let dtype = DType::from_safetensors(view.dtype())
            .with_context(|| format!("{}: tensor {name}", file.display()))?;
        let data = CpuData::from_le_bytes(dtype, view.data())
            .with_context(|| format!("{}: tensor {name}", file.display()))?;
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// FNV-1a 64-bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
