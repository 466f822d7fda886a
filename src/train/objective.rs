//! The MERT pre-training objective (docs/objective.md sections 1-2): masked-frame codebook NCE over K codebooks,
//! CQT reconstruction MSE on masked frames, the conv-feature L2 penalty, with fairseq's normalisation
//! `(sum_k CE_k + w_pen * pen * N_m + w_cqt * MSE * N_m) / N_m`.
//!
//! The heads live in the model's ParamStore under fairseq's names, so one tape and one optimiser see them:
//! `final_proj.{weight,bias}` [K*D, H], `label_embs_concat` [K*C, D], `encoder_cqt_model.fc.{weight,bias}`.

use crate::autograd::{loss, nn, Tape, Var};
use crate::model::mert::{ForwardOptions, Mert};
use crate::model::weights::{read_safetensors, write_safetensors, InitRng};
use crate::tensor::Tensor;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

pub const HEAD_NAMES: [&str; 5] = [
    "final_proj.weight",
    "final_proj.bias",
    "label_embs_concat",
    "encoder_cqt_model.fc.weight",
    "encoder_cqt_model.fc.bias",
];

#[derive(Clone, Debug, PartialEq)]
pub struct HeadsConfig {
    pub codebooks: usize,
    /// Rows per codebook in `label_embs_concat`: 1024, or 1028 for a fairseq Dictionary with 4 specials.
    pub codewords: usize,
    pub final_dim: usize,
    pub cqt_bins: usize,
    pub temperature: f32,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        HeadsConfig {
            codebooks: 8,
            codewords: 1024,
            final_dim: 64,
            cqt_bins: 336,
            temperature: 0.1,
        }
    }
}

impl HeadsConfig {
    /// Offset from a teacher code to its row: 4 when the rows follow a fairseq Dictionary.
    pub fn label_offset(&self, codebook_size: usize) -> usize {
        self.codewords - codebook_size
    }
}

/// Loss-term weights. Default = the MERT code; `paper_alpha10` = the CultureMERT paper's alpha = 10 on
/// the acoustic (codebook) term (docs/recipe.md section 4 explains the conflict).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossWeights {
    pub codebook: f32,
    pub feature_penalty: f32,
    pub cqt: f32,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            codebook: 1.0,
            feature_penalty: 10.0,
            cqt: 1.0,
        }
    }
}

impl LossWeights {
    pub fn paper_alpha10() -> Self {
        LossWeights {
            codebook: 10.0,
            feature_penalty: 10.0,
            cqt: 1.0,
        }
    }
}

/// Add freshly initialised heads to the model: Linear layers as torch's default (U(+-1/sqrt(fan_in))),
/// codewords U(0, 1) as fairseq.
pub fn init_heads(model: &mut Mert, cfg: &HeadsConfig, seed: u64) -> Result<()> {
    let h = model.config.hidden_size;
    let mut rng = InitRng::new(seed ^ 0x4EAD_5EED);
    let mut uniform = |n: usize, lo: f64, hi: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * rng.uniform()) as f32)
            .collect()
    };
    let b = 1.0 / (h as f64).sqrt();
    let kd = cfg.codebooks * cfg.final_dim;
    let tensors = [
        Tensor::from_f32(&[kd, h], uniform(kd * h, -b, b)),
        Tensor::from_f32(&[kd], uniform(kd, -b, b)),
        Tensor::from_f32(
            &[cfg.codebooks * cfg.codewords, cfg.final_dim],
            uniform(cfg.codebooks * cfg.codewords * cfg.final_dim, 0.0, 1.0),
        ),
        Tensor::from_f32(&[cfg.cqt_bins, h], uniform(cfg.cqt_bins * h, -b, b)),
        Tensor::from_f32(&[cfg.cqt_bins], uniform(cfg.cqt_bins, -b, b)),
    ];
    for (name, t) in HEAD_NAMES.iter().zip(tensors) {
        match model.params.id(name) {
            Some(id) => model.params.get_mut(id).value = t,
            None => {
                model.params.insert(name, t)?;
            }
        }
    }
    Ok(())
}

/// Write the heads to a safetensors file (beside an HF model directory).
pub fn save_heads(model: &Mert, path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = HEAD_NAMES
        .iter()
        .map(|n| {
            Ok((
                n.to_string(),
                model
                    .params
                    .by_name(n)
                    .with_context(|| format!("head {n} missing"))?
                    .value
                    .clone(),
            ))
        })
        .collect::<Result<_>>()?;
    write_safetensors(path, &tensors, None)
}

/// Load heads written by `save_heads` (or converted from fairseq), checking shapes against the model and
/// `codebooks`; the codeword count (1024 or 1028 rows) is taken from the file. Returns the heads config.
pub fn load_heads(model: &mut Mert, path: &Path, codebooks: usize) -> Result<HeadsConfig> {
    let raw = read_safetensors(path)?;
    let h = model.config.hidden_size;
    let get = |n: &str| {
        raw.get(n)
            .with_context(|| format!("{}: head tensor {n} missing", path.display()))
    };
    let (fp_shape, _) = get("final_proj.weight")?;
    let (emb_shape, _) = get("label_embs_concat")?;
    let (cqt_shape, _) = get("encoder_cqt_model.fc.weight")?;
    ensure!(
        fp_shape.len() == 2 && fp_shape[1] == h && fp_shape[0].is_multiple_of(codebooks),
        "{}: final_proj.weight is {fp_shape:?}",
        path.display()
    );
    let final_dim = fp_shape[0] / codebooks;
    ensure!(
        emb_shape.len() == 2 && emb_shape[1] == final_dim && emb_shape[0].is_multiple_of(codebooks),
        "{}: label_embs_concat is {emb_shape:?}, expected [{codebooks}*C, {final_dim}]",
        path.display()
    );
    ensure!(
        cqt_shape.len() == 2 && cqt_shape[1] == h,
        "{}: encoder_cqt_model.fc.weight is {cqt_shape:?}",
        path.display()
    );
    let cfg = HeadsConfig {
        codebooks,
        codewords: emb_shape[0] / codebooks,
        final_dim,
        cqt_bins: cqt_shape[0],
        temperature: 0.1,
    };
    ensure!(
        get("final_proj.bias")?.0 == [fp_shape[0]],
        "{}: final_proj.bias shape",
        path.display()
    );
    ensure!(
        get("encoder_cqt_model.fc.bias")?.0 == [cqt_shape[0]],
        "{}: encoder_cqt_model.fc.bias shape",
        path.display()
    );
    for name in HEAD_NAMES {
        let (shape, data) = get(name)?;
        let t = Tensor::from_f32(shape, data.to_f32_vec());
        match model.params.id(name) {
            Some(id) => model.params.get_mut(id).value = t,
            None => {
                model.params.insert(name, t)?;
            }
        }
    }
    Ok(cfg)
}

/// One pre-training batch: equal-length clips (MERT crops every batch to its shortest clip).
pub struct PretrainBatch {
    /// [B, L] waveform fed to the model (after mixup, if any).
    pub audio: Tensor,
    /// Teacher codes [B, K, Tc] (Tc >= model frames; the first T are used), values in 0..codebook_size.
    pub codes: Vec<i32>,
    pub code_frames: usize,
    pub codebook_size: usize,
    /// CQT target of the clean audio [B, Tq, bins] (Tq >= T; the first T are used).
    pub cqt: Vec<f32>,
    pub cqt_frames: usize,
    /// Masked frames [B*T] (1 = masked).
    pub mask: Vec<u8>,
    /// [B, L] clean audio when the CQT target is left to the CUDA device (`cqt` is then empty and
    /// `cqt_frames` 0); `None` when `cqt` holds the target.
    pub clean_audio: Option<Vec<f32>>,
}

/// The loss and its parts for logging.
pub struct LossParts {
    pub total: Var,
    /// Mean codebook CE per masked frame (sum over codebooks), in nats.
    pub codebook_ce: f32,
    pub feature_penalty: f32,
    pub cqt_mse: f32,
    pub masked_frames: usize,
    /// Fraction of (masked frame, codebook) pairs whose target codeword scores highest.
    pub accuracy: f32,
}

/// The masked frames of a batch (flat indices into [B*T]) with their teacher targets (label offset
/// applied) and CQT targets, after checking every shape: shared by the CPU and CUDA losses.
pub struct MaskedTargets {
    pub rows: Vec<usize>,
    /// [rows, K]
    pub targets: Vec<i32>,
    /// [rows, cqt_bins]; empty when the batch leaves the CQT to the device.
    pub cqt_target: Vec<f32>,
}

pub fn masked_targets(
    config: &crate::model::config::MertConfig,
    heads: &HeadsConfig,
    batch: &PretrainBatch,
) -> Result<MaskedTargets> {
    let (b, _) = (batch.audio.shape()[0], batch.audio.shape()[1]);
    let frames = config.frames_for_samples(batch.audio.shape()[1]);
    ensure!(
        frames > 0,
        "clips of {} samples give no frames",
        batch.audio.shape()[1]
    );
    ensure!(
        batch.mask.len() == b * frames,
        "mask has {} entries for {b} x {frames} frames",
        batch.mask.len()
    );
    let k_total = heads.codebooks;
    ensure!(
        batch.code_frames >= frames && batch.codes.len() == b * k_total * batch.code_frames,
        "codes: {} values for [{b}, {k_total}, {}] (need >= {frames} frames)",
        batch.codes.len(),
        batch.code_frames
    );
    match &batch.clean_audio {
        Some(clean) => ensure!(
            clean.len() == b * batch.audio.shape()[1] && batch.cqt.is_empty(),
            "clean audio: {} samples for {} (and no host CQT target)",
            clean.len(),
            b * batch.audio.shape()[1]
        ),
        None => ensure!(
            batch.cqt_frames >= frames && batch.cqt.len() == b * batch.cqt_frames * heads.cqt_bins,
            "cqt target: {} values for [{b}, {}, {}] (need >= {frames} frames)",
            batch.cqt.len(),
            batch.cqt_frames,
            heads.cqt_bins
        ),
    }
    ensure!(
        heads.codewords >= batch.codebook_size,
        "heads have {} rows per codebook, teacher has {} codes",
        heads.codewords,
        batch.codebook_size
    );
    let offset = heads.label_offset(batch.codebook_size) as i32;
    let rows: Vec<usize> = batch
        .mask
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != 0)
        .map(|(i, _)| i)
        .collect();
    if rows.is_empty() {
        bail!("no masked frames in the batch");
    }
    let n_m = rows.len();
    let mut targets = Vec::with_capacity(n_m * k_total);
    let mut cqt_target = Vec::with_capacity(n_m * heads.cqt_bins);
    for &r in &rows {
        let (bi, t) = (r / frames, r % frames);
        for k in 0..k_total {
            targets.push(batch.codes[(bi * k_total + k) * batch.code_frames + t] + offset);
        }
        if batch.clean_audio.is_none() {
            let start = (bi * batch.cqt_frames + t) * heads.cqt_bins;
            cqt_target.extend_from_slice(&batch.cqt[start..start + heads.cqt_bins]);
        }
    }

    Ok(MaskedTargets {
        rows,
        targets,
        cqt_target,
    })
}

pub fn mert_loss(
    tape: &mut Tape,
    model: &Mert,
    heads: &HeadsConfig,
    batch: &PretrainBatch,
    weights: &LossWeights,
    opts: &ForwardOptions,
) -> Result<LossParts> {
    let MaskedTargets {
        rows,
        targets,
        cqt_target,
    } = masked_targets(&model.config, heads, batch)?;
    ensure!(
        batch.clean_audio.is_none(),
        "the CPU loss needs the CQT target on the host (the batch left it to the device)"
    );
    let (n_m, k_total) = (rows.len(), heads.codebooks);
    let mut opts = opts.clone();
    opts.mask_time = Some(batch.mask.clone());
    let out = model.forward(tape, &batch.audio, None, &opts)?;
    let x = out.hidden_states.last().expect("at least one hidden state");
    let xm = loss::gather_rows(tape, x, &rows)?;
    let p = |tape: &mut Tape, n: &str| -> Result<Var> {
        let id = model
            .params
            .id(n)
            .with_context(|| format!("head {n} missing: initialise or load the heads"))?;
        Ok(tape.param(&model.params, id))
    };
    let (fw, fb, emb) = (
        p(tape, "final_proj.weight")?,
        p(tape, "final_proj.bias")?,
        p(tape, "label_embs_concat")?,
    );
    let proj = nn::linear(tape, &xm, &fw, Some(&fb))?;
    let (ce, correct) = loss::nce_loss(tape, &proj, &emb, &targets, k_total, heads.temperature)?;
    let (cw, cb) = (
        p(tape, "encoder_cqt_model.fc.weight")?,
        p(tape, "encoder_cqt_model.fc.bias")?,
    );
    let cqt_pred = nn::linear(tape, &xm, &cw, Some(&cb))?;
    let mse = loss::mse(tape, &cqt_pred, &cqt_target)?;
    let pen = loss::mean_square(tape, &out.features);
    let n = n_m as f32;
    let total = loss::weighted_sum(
        tape,
        &[
            (&ce, weights.codebook / n),
            (&pen, weights.feature_penalty),
            (&mse, weights.cqt),
        ],
    )?;
    Ok(LossParts {
        codebook_ce: ce.data()[0] / n,
        feature_penalty: pen.data()[0],
        cqt_mse: mse.data()[0],
        masked_frames: n_m,
        accuracy: correct as f32 / (n_m * k_total) as f32,
        total,
    })
}
