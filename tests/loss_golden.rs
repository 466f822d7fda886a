//! The whole MERT pre-training loss (mask given) and every parameter gradient, model and heads, vs a
//! PyTorch reference built on transformers' HubertModel with fairseq's MERT/HuBERT loss code paths
//! (reference/make_golden_loss.py: tiny post-LN model, K=3 codebooks, 13 rows each of which 4 are fairseq
//! Dictionary specials, D=4, 7 CQT bins, GradMultiply 0.1, loss weights 1/10/1).
//!
//! Tolerance: per tensor max |ours - torch| <= 1e-4 * max |torch| (f32 on both sides; the reference's own
//! f32-vs-f64 error is 4e-6), loss parts 1e-5 relative.

mod common;

use culturemert_raw::autograd::Tape;
use culturemert_raw::io::safetensors::{read_safetensors, RawTensors};
use culturemert_raw::model::mert::{ForwardOptions, Mert};
use culturemert_raw::tensor::{CpuData, Tensor};
use culturemert_raw::train::objective::{load_heads, mert_loss, LossWeights, PretrainBatch};
use std::path::PathBuf;

const GRAD_TOL: f64 = 1e-4;
const LOSS_TOL: f64 = 1e-5;

fn golden(rel: &str) -> PathBuf {
    common::golden(rel)
}

fn get<'a>(g: &'a RawTensors, name: &str) -> &'a (Vec<usize>, CpuData) {
    g.get(name).unwrap_or_else(|| panic!("golden lacks {name}"))
}

fn ints(g: &RawTensors, name: &str) -> Vec<i32> {
    match &get(g, name).1 {
        CpuData::I32(v) => v.clone(),
        _ => panic!("{name} is not int32"),
    }
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64))
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

fn rel(a: f32, b: f32) -> f64 {
    (a as f64 - b as f64).abs() / (b as f64).abs()
}

#[test]
fn mert_loss_and_every_gradient_match_pytorch() {
    let mut model = Mert::load(&golden("tiny_postln")).unwrap();
    let heads = load_heads(&mut model, &golden("loss/heads.safetensors"), 3).unwrap();
    assert_eq!(
        (heads.codewords, heads.final_dim, heads.cqt_bins),
        (13, 4, 7)
    );
    let g = read_safetensors(&golden("loss/golden.safetensors")).unwrap();

    let (ashape, adata) = get(&g, "audio");
    let (cshape, _) = get(&g, "codes");
    let (qshape, qdata) = get(&g, "cqt");
    let batch = PretrainBatch {
        audio: Tensor::from_f32(ashape, adata.to_f32_vec()),
        codes: ints(&g, "codes"),
        code_frames: cshape[2],
        codebook_size: ints(&g, "codebook_size")[0] as usize,
        cqt: qdata.to_f32_vec(),
        cqt_frames: qshape[1],
        mask: ints(&g, "mask").iter().map(|&m| u8::from(m != 0)).collect(),
        clean_audio: None,
    };
    let opts = ForwardOptions {
        feature_grad_mult: Some(0.1),
        ..Default::default()
    };
    let mut tape = Tape::new();
    let parts = mert_loss(
        &mut tape,
        &model,
        &heads,
        &batch,
        &LossWeights::default(),
        &opts,
    )
    .unwrap();

    let scalar = |n: &str| get(&g, n).1.to_f32_vec()[0];
    assert_eq!(parts.masked_frames as i32, ints(&g, "masked_frames")[0]);
    let checks = [
        ("total", parts.total.data()[0]),
        ("codebook_ce", parts.codebook_ce),
        ("feature_penalty", parts.feature_penalty),
        ("cqt_mse", parts.cqt_mse),
    ];
    for (name, ours) in checks {
        let e = rel(ours, scalar(name));
        println!(
            "{name}: ours {ours:.7} torch {:.7} rel err {e:.2e}",
            scalar(name)
        );
        assert!(e <= LOSS_TOL, "{name}: rel err {e:.2e} > {LOSS_TOL:e}");
    }
    assert_eq!(
        parts.accuracy,
        scalar("accuracy"),
        "accuracy (fairseq compute_correct)"
    );

    let mut params = model.params.clone();
    params.zero_grad();
    tape.backward(vec![(&parts.total, vec![1.0])], &mut params)
        .unwrap();
    let mut worst = (0.0f64, String::new());
    let mut failures = Vec::new();
    for p in params.iter() {
        let file_name = model.spelling.file_name_of(&p.name);
        let reference = get(&g, &format!("grad.{file_name}")).1.to_f32_vec();
        let ours = p.grad.clone().unwrap_or_else(|| vec![0.0; p.value.numel()]);
        // k_proj.bias has an exactly-zero true gradient (softmax ignores a per-query shift): both sides hold
        // rounding noise, measured against the same layer's k_proj.weight gradient scale.
        let scale_name = file_name.replace("k_proj.bias", "k_proj.weight");
        let scale = max_abs(&get(&g, &format!("grad.{scale_name}")).1.to_f32_vec());
        assert!(scale > 0.0, "{}: reference gradient is all zero", p.name);
        let e = max_diff(&ours, &reference) / scale;
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
        if e > GRAD_TOL {
            failures.push(format!("grad of {}: rel err {e:.2e}", p.name));
        }
    }
    println!(
        "{} parameter gradients (model + 5 heads), worst rel err {:.2e} ({})",
        params.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "tolerance {GRAD_TOL:e}:\n{}",
        failures.join("\n")
    );
    assert_eq!(params.len(), model.params.len());
    assert!(
        params.len() > 5 + 20,
        "model and heads parameters all checked"
    );
}
