//! MERT parameters under their HuggingFace names: the expected set for a config, loading from an HF
//! directory (safetensors or pytorch_model.bin), random initialisation, and saving back.

use super::config::MertConfig;
use crate::autograd::ParamStore;
use crate::tensor::{DType, Tensor};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Internal names of the positional-conv weight norm (the old `torch.nn.utils.weight_norm` spelling).
pub const POS_CONV_G: &str = "encoder.pos_conv_embed.conv.weight_g";
pub const POS_CONV_V: &str = "encoder.pos_conv_embed.conv.weight_v";
const POS_CONV_G_NEW: &str = "encoder.pos_conv_embed.conv.parametrizations.weight.original0";
const POS_CONV_V_NEW: &str = "encoder.pos_conv_embed.conv.parametrizations.weight.original1";

/// How a checkpoint spells weight-norm parameters; kept so a model is written back under its own names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightNormSpelling {
    /// `weight_g` / `weight_v` (torch.nn.utils.weight_norm; the hub's MERT-v1-95M).
    #[default]
    Legacy,
    /// `parametrizations.weight.original0/1` (torch.nn.utils.parametrizations.weight_norm).
    Parametrizations,
}

impl WeightNormSpelling {
    pub fn file_name_of(self, internal: &str) -> String {
        match (self, internal) {
            (WeightNormSpelling::Parametrizations, POS_CONV_G) => POS_CONV_G_NEW.into(),
            (WeightNormSpelling::Parametrizations, POS_CONV_V) => POS_CONV_V_NEW.into(),
            _ => internal.into(),
        }
    }
}

/// Every parameter a config implies, in HF order, with its shape.
pub fn expected_parameters(cfg: &MertConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let mut v: Vec<(String, Vec<usize>)> = vec![("masked_spec_embed".into(), vec![h])];
    let mut c_in = 1;
    for (i, ((&c, &k), _)) in cfg
        .conv_dim
        .iter()
        .zip(&cfg.conv_kernel)
        .zip(&cfg.conv_stride)
        .enumerate()
    {
        let p = format!("feature_extractor.conv_layers.{i}");
        v.push((format!("{p}.conv.weight"), vec![c, c_in, k]));
        if cfg.conv_bias {
            v.push((format!("{p}.conv.bias"), vec![c]));
        }
        if cfg.feat_extract_norm == "layer" || i == 0 {
            v.push((format!("{p}.layer_norm.weight"), vec![c]));
            v.push((format!("{p}.layer_norm.bias"), vec![c]));
        }
        c_in = c;
    }
    if cfg.feat_proj_layer_norm {
        v.push(("feature_projection.layer_norm.weight".into(), vec![c_in]));
        v.push(("feature_projection.layer_norm.bias".into(), vec![c_in]));
    }
    v.push(("feature_projection.projection.weight".into(), vec![h, c_in]));
    v.push(("feature_projection.projection.bias".into(), vec![h]));
    let k = cfg.num_conv_pos_embeddings;
    v.push(("encoder.pos_conv_embed.conv.bias".into(), vec![h]));
    v.push((POS_CONV_G.into(), vec![1, 1, k]));
    v.push((
        POS_CONV_V.into(),
        vec![h, h / cfg.num_conv_pos_embedding_groups, k],
    ));
    v.push(("encoder.layer_norm.weight".into(), vec![h]));
    v.push(("encoder.layer_norm.bias".into(), vec![h]));
    let inter = cfg.intermediate_size;
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            v.push((format!("{p}.attention.{proj}.weight"), vec![h, h]));
            v.push((format!("{p}.attention.{proj}.bias"), vec![h]));
        }
        v.push((format!("{p}.layer_norm.weight"), vec![h]));
        v.push((format!("{p}.layer_norm.bias"), vec![h]));
        v.push((
            format!("{p}.feed_forward.intermediate_dense.weight"),
            vec![inter, h],
        ));
        v.push((
            format!("{p}.feed_forward.intermediate_dense.bias"),
            vec![inter],
        ));
        v.push((
            format!("{p}.feed_forward.output_dense.weight"),
            vec![h, inter],
        ));
        v.push((format!("{p}.feed_forward.output_dense.bias"), vec![h]));
        v.push((format!("{p}.final_layer_norm.weight"), vec![h]));
        v.push((format!("{p}.final_layer_norm.bias"), vec![h]));
    }
    v
}

/// Check `raw` against the config's parameter set and move it into a ParamStore (as f32).
pub fn params_from_raw(
    cfg: &MertConfig,
    mut raw: RawTensors,
    source: &str,
) -> Result<(ParamStore, WeightNormSpelling)> {
    let mut spelling = WeightNormSpelling::Legacy;
    for (new, old) in [(POS_CONV_G_NEW, POS_CONV_G), (POS_CONV_V_NEW, POS_CONV_V)] {
        if let Some(t) = raw.remove(new) {
            spelling = WeightNormSpelling::Parametrizations;
            if raw.insert(old.to_string(), t).is_some() {
                bail!("{source}: both {new} and {old} are present");
            }
        }
    }
    let expected = expected_parameters(cfg);
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, shape) in &expected {
        match raw.get(name) {
            None => missing.push(spelling.file_name_of(name)),
            Some((s, _)) if s != shape => misshaped.push(format!(
                "{} is {s:?}, config needs {shape:?}",
                spelling.file_name_of(name)
            )),
            _ => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&String> = raw.keys().filter(|k| !known.contains(k.as_str())).collect();
    if !missing.is_empty() || !misshaped.is_empty() || !unexpected.is_empty() {
        let mut msg = format!("{source} does not match its config:");
        if !missing.is_empty() {
            msg += &format!(
                "\n  missing tensors ({}): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        if !misshaped.is_empty() {
            msg += &format!(
                "\n  mis-shaped tensors ({}): {}",
                misshaped.len(),
                misshaped.join("; ")
            );
        }
        if !unexpected.is_empty() {
            let u: Vec<&str> = unexpected.iter().map(|s| s.as_str()).collect();
            msg += &format!("\n  unexpected tensors ({}): {}", u.len(), u.join(", "));
        }
        bail!(msg);
    }
    let mut store = ParamStore::new();
    for (name, shape) in &expected {
        let (_, data) = raw.remove(name).expect("checked above");
        if !matches!(data.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            bail!(
                "{source}: tensor {name} has non-float dtype {:?}",
                data.dtype()
            );
        }
        store.insert(name, Tensor::from_f32(shape, data.to_f32_vec()))?;
    }
    Ok((store, spelling))
}

/// Load the parameters of an HF model directory (`model.safetensors`, else `pytorch_model.bin`).
pub fn load_params(dir: &Path, cfg: &MertConfig) -> Result<(ParamStore, WeightNormSpelling)> {
    let st = dir.join("model.safetensors");
    let bin = dir.join("pytorch_model.bin");
    if st.exists() {
        params_from_raw(cfg, read_safetensors(&st)?, &st.display().to_string())
    } else if bin.exists() {
        let raw = super::torch_bin::read_as_raw_tensors(&bin)?;
        params_from_raw(cfg, raw, &bin.display().to_string())
    } else {
        bail!(
            "{}: no model.safetensors or pytorch_model.bin",
            dir.display()
        )
    }
}

/// Write `config.json` + `model.safetensors` (HF layout) under `dir`, in the given weight-norm spelling.
pub fn save_model_dir(
    dir: &Path,
    cfg: &MertConfig,
    store: &ParamStore,
    spelling: WeightNormSpelling,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tensors: Vec<(String, Tensor)> = expected_parameters(cfg)
        .into_iter()
        .map(|(n, _)| {
            let p = store
                .by_name(&n)
                .with_context(|| format!("parameter {n} missing from the store"))?;
            Ok((spelling.file_name_of(&n), p.value.clone()))
        })
        .collect::<Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&dir.join("model.safetensors"), &tensors, Some(meta))?;
    write_atomically(&dir.join("config.json"), cfg.to_json_string()?.as_bytes())
}

/// The initialisation generator: the crate's splitmix64 (`uniform` 53 bits, `normal` Box-Muller).
pub use crate::rng::SplitMix64 as InitRng;

/// fairseq's from-scratch initialisation (docs/model.md section 4): linear and attention weights N(0, 0.02), biases 0,
/// convs kaiming-normal, pos-conv N(0, sqrt(4/(k*H))) then weight-norm (g = per-tap norm), norms 1/0,
/// mask embedding U(0, 1).
pub fn init_params(cfg: &MertConfig, seed: u64) -> Result<ParamStore> {
    let mut rng = InitRng::new(seed);
    let mut store = ParamStore::new();
    let expected = expected_parameters(cfg);
    let mut pos_v: Option<Vec<f32>> = None;
    for (name, shape) in &expected {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name == POS_CONV_V {
            let std = (4.0 / (cfg.num_conv_pos_embeddings * cfg.hidden_size) as f64).sqrt();
            let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
            pos_v = Some(v.clone());
            v
        } else if name == POS_CONV_G {
            Vec::new() // filled below from v
        } else if name == "masked_spec_embed" {
            (0..n).map(|_| rng.uniform() as f32).collect()
        } else if name.ends_with("conv.weight") {
            let fan_in = (shape[1] * shape[2]) as f64;
            let std = (2.0 / fan_in).sqrt();
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        } else if name.contains("layer_norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".weight") {
            (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
        } else {
            vec![0.0; n]
        };
        if name != POS_CONV_G {
            store.insert(name, Tensor::from_f32(shape, data))?;
        }
    }
    // g = ||v[:, :, k]|| makes the initial weight equal to v, as torch's weight_norm does.
    let v = pos_v.expect("pos conv v");
    let k = cfg.num_conv_pos_embeddings;
    let mut g = vec![0.0f64; k];
    for (i, x) in v.iter().enumerate() {
        g[i % k] += (*x as f64) * (*x as f64);
    }
    let g: Vec<f32> = g.iter().map(|s| s.sqrt() as f32).collect();
    // Re-insert in HF order: rebuild the store with g placed where expected.
    let mut ordered = ParamStore::new();
    for (name, shape) in &expected {
        let t = if name == POS_CONV_G {
            Tensor::from_f32(shape, g.clone())
        } else {
            store.by_name(name).unwrap().value.clone()
        };
        ordered.insert(name, t)?;
    }
    Ok(ordered)
}

// Safetensors I/O moved to `crate::io::safetensors`; re-exported here until every caller is updated.
pub use crate::io::safetensors::{
    read_safetensors, write_atomically, write_safetensors, RawTensors,
};
