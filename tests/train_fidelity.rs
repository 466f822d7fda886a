//! Ten AdamW updates of two-stage training vs PyTorch (llm.c's optimizer-fidelity test, for MERT):
//! reference/make_golden_train.py trains the tiny post-LN model + heads with torch.optim.AdamW (two
//! parameter groups, per-stage betas/eps), warm-up + cosine re-warmed at the stage boundary (update 5),
//! stage-1 freezing (CNN + codewords + heads train), 2 micro-batches per update, clip_grad_norm_(1.0).
//! We replay it with train::{objective, optim, schedule} and compare every update's LR, micro-batch losses
//! and grad norm, and every final parameter.
//!
//! Tolerances (f32 on both sides; torch's own f32-vs-f64 floor in brackets, printed by the script):
//!   LR 1e-12 relative; losses 1e-5 relative [2.7e-7]; grad norms 1e-5 relative [6.5e-7];
//!   final parameters: max |ours - torch| <= 2e-3 * (max |final - initial| of that parameter in torch)
//!   [8.1e-4: Adam divides by sqrt(v) + eps, so elements with gradients near eps amplify rounding];
//!   k_proj.bias has an exactly-zero true gradient (Adam moves it by rounding noise only), so its error is
//!   measured against the movement of the same layer's k_proj.weight, tolerance 1e-2 [9.7e-4].

mod common;

use culturemert_raw::autograd::Tape;
use culturemert_raw::device::Schedule;
use culturemert_raw::io::safetensors::{read_safetensors, RawTensors};
use culturemert_raw::model::cuda_mert::Precision;
use culturemert_raw::model::mert::{ForwardOptions, Mert};
use culturemert_raw::tensor::{CpuData, Tensor};
use culturemert_raw::train::cuda_step::CudaTrainer;
use culturemert_raw::train::objective::{load_heads, mert_loss, LossWeights, PretrainBatch};
use culturemert_raw::train::optim::{clip_grad_norm, AdamW, ParamGroup, StepOutcome};
use culturemert_raw::train::schedule::{CosineStage, StagedCosine};
use std::path::PathBuf;

const UPDATES: usize = 10;
const MICRO: usize = 2;
const LOSS_TOL: f64 = 1e-5;
const NORM_TOL: f64 = 1e-5;
const PARAM_TOL: f64 = 2e-3;
const NOISE_TOL: f64 = 1e-2;
const STAGE1_TRAINABLE: [&str; 4] = [
    "feature_extractor.",
    "label_embs_concat",
    "final_proj.",
    "encoder_cqt_model.",
];

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

/// A comma-separated list of exact decimals from the golden file's metadata.
fn metadata_list(path: &std::path::Path, key: &str) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().expect("golden metadata");
    meta.get(key)
        .unwrap_or_else(|| panic!("metadata lacks {key}"))
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect()
}

fn batch(g: &RawTensors, i: usize) -> PretrainBatch {
    let (ashape, adata) = get(g, &format!("audio.{i}"));
    let (cshape, _) = get(g, &format!("codes.{i}"));
    let (qshape, qdata) = get(g, &format!("cqt.{i}"));
    PretrainBatch {
        audio: Tensor::from_f32(ashape, adata.to_f32_vec()),
        codes: ints(g, &format!("codes.{i}")),
        code_frames: cshape[2],
        codebook_size: ints(g, "codebook_size")[0] as usize,
        cqt: qdata.to_f32_vec(),
        cqt_frames: qshape[1],
        mask: ints(g, &format!("mask.{i}"))
            .iter()
            .map(|&m| u8::from(m != 0))
            .collect(),
        clean_audio: None,
    }
}

/// The two groups of the reference; (betas, eps) per stage.
fn groups(stage: usize) -> Vec<ParamGroup> {
    let no_decay = [((0.8, 0.99), 1e-6), ((0.85, 0.95), 1e-6)][stage];
    let decay = [((0.9, 0.999), 1e-5), ((0.9, 0.95), 1e-8)][stage];
    vec![
        ParamGroup {
            name: "no_decay".into(),
            patterns: [
                "*.bias",
                "*layer_norm*",
                "masked_spec_embed",
                "label_embs_concat",
            ]
            .map(String::from)
            .to_vec(),
            betas: no_decay.0,
            eps: no_decay.1,
            weight_decay: 0.0,
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "decay".into(),
            patterns: vec![],
            betas: decay.0,
            eps: decay.1,
            weight_decay: 0.1,
            lr_scale: 1.0,
        },
    ]
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

/// Where the ten updates run: the CPU tape + optimiser, or `CudaTrainer` on the host emulator.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Cpu,
    Emu(Schedule),
}

#[test]
fn ten_adamw_updates_two_stages_match_pytorch() {
    ten_updates(Backend::Cpu);
}

/// The same replay with the loss, backward, clipping and fused AdamW all in CUDA kernels (emulated).
#[test]
fn ten_adamw_updates_on_the_emulated_device_match_pytorch() {
    ten_updates(Backend::Emu(Schedule::Forward));
}

fn ten_updates(backend: Backend) {
    let path = golden("train/golden.safetensors");
    let g = read_safetensors(&path).unwrap();
    let mut model = Mert::load(&golden("tiny_postln")).unwrap();
    let heads = load_heads(&mut model, &golden("loss/heads.safetensors"), 3).unwrap();
    let initial = model.params.clone();
    let schedule = StagedCosine::new(vec![
        CosineStage {
            steps: 5,
            warmup: 2,
            eta_max: 5e-3,
            eta_min: 5e-4,
        },
        CosineStage {
            steps: 5,
            warmup: 1,
            eta_max: 2e-3,
            eta_min: 2e-4,
        },
    ])
    .unwrap();
    let mut opt = AdamW::new(groups(0)).unwrap();
    let opts = ForwardOptions {
        feature_grad_mult: Some(0.1),
        ..Default::default()
    };
    let (ref_losses, ref_lr, ref_norm) = (
        metadata_list(&path, "losses"),
        metadata_list(&path, "lr"),
        metadata_list(&path, "grad_norm"),
    );
    let (mut worst_loss, mut worst_norm) = (0.0f64, 0.0f64);
    let mut device = match backend {
        Backend::Cpu => None,
        Backend::Emu(schedule) => {
            Some(CudaTrainer::new(&common::device(schedule), &model, Precision::F32).unwrap())
        }
    };

    for update in 0..UPDATES {
        let (stage, _) = schedule.locate(update);
        // Stage boundary: new betas/eps on the same groups (moments and step counts kept), new frozen set.
        opt.groups = groups(stage);
        model.params.set_frozen(&[""], stage == 0);
        model.params.set_frozen(&STAGE1_TRAINABLE, false);
        let lr = schedule.lr(update);
        assert!(
            rel(lr, ref_lr[update]) < 1e-12,
            "update {update}: lr {lr} vs torch {}",
            ref_lr[update]
        );

        if let Some(dev) = device.as_mut() {
            dev.apply_frozen(&model.params).unwrap();
            dev.zero_grads().unwrap();
            for m in 0..MICRO {
                let b = batch(&g, update * MICRO + m);
                let parts = dev
                    .loss_backward(
                        &heads,
                        &b,
                        &LossWeights::default(),
                        &opts,
                        1.0 / MICRO as f32,
                    )
                    .unwrap();
                let (ours, theirs) = (parts.total as f64, ref_losses[update * MICRO + m]);
                let e = rel(ours, theirs);
                worst_loss = worst_loss.max(e);
                assert!(
                    e <= LOSS_TOL,
                    "emu update {update} micro {m}: loss {ours} vs torch {theirs} (rel {e:.2e})"
                );
            }
            let norm = dev.clip_grad_norm(1.0).unwrap();
            let e = rel(norm.norm, ref_norm[update]);
            worst_norm = worst_norm.max(e);
            assert!(
                e <= NORM_TOL,
                "emu update {update}: grad norm {} vs torch {} (rel {e:.2e})",
                norm.norm,
                ref_norm[update]
            );
            let updated = dev.adamw_step(&opt, lr).unwrap();
            let expected_params = if stage == 0 { 10 } else { model.params.len() };
            assert_eq!(updated, expected_params, "emu update {update}");
            continue;
        }
        model.params.zero_grad();
        for m in 0..MICRO {
            let b = batch(&g, update * MICRO + m);
            let mut tape = Tape::new();
            let parts = mert_loss(
                &mut tape,
                &model,
                &heads,
                &b,
                &LossWeights::default(),
                &opts,
            )
            .unwrap();
            let (ours, theirs) = (parts.total.data()[0] as f64, ref_losses[update * MICRO + m]);
            let e = rel(ours, theirs);
            worst_loss = worst_loss.max(e);
            assert!(
                e <= LOSS_TOL,
                "update {update} micro {m}: loss {ours} vs torch {theirs} (rel {e:.2e})"
            );
            // Gradient accumulation: the caller scales each micro-batch by 1/MICRO.
            tape.backward(
                vec![(&parts.total, vec![1.0 / MICRO as f32])],
                &mut model.params,
            )
            .unwrap();
        }
        let norm = clip_grad_norm(&mut model.params, 1.0);
        let e = rel(norm.norm, ref_norm[update]);
        worst_norm = worst_norm.max(e);
        assert!(
            e <= NORM_TOL,
            "update {update}: grad norm {} vs torch {} (rel {e:.2e})",
            norm.norm,
            ref_norm[update]
        );
        assert!(
            norm.scale < 1.0,
            "update {update}: the reference clips every update"
        );
        let outcome = opt.step(&mut model.params, lr).unwrap();
        let expected_params = if stage == 0 { 10 } else { model.params.len() };
        assert_eq!(
            outcome,
            StepOutcome::Applied {
                params: expected_params
            },
            "update {update}"
        );
        println!(
            "update {update}: lr {lr:.6e} losses {:.6} {:.6} grad norm {:.5}",
            ref_losses[2 * update],
            ref_losses[2 * update + 1],
            norm.norm
        );
    }

    if let Some(dev) = &device {
        dev.download(&mut model, &mut opt).unwrap();
    }
    // Parameters frozen through stage 1 got their first update in stage 2.
    assert_eq!(
        opt.state("encoder.layers.0.attention.q_proj.weight")
            .unwrap()
            .step,
        5
    );
    assert_eq!(opt.state("label_embs_concat").unwrap().step, 10);

    let mut worst = (0.0f64, String::new());
    let mut worst_noise = (0.0f64, String::new());
    let mut failures = Vec::new();
    for p in model.params.iter() {
        let reference = get(&g, &format!("final.{}", p.name)).1.to_f32_vec();
        let scale_name = p.name.replace("k_proj.bias", "k_proj.weight");
        let moved = max_abs_diff(
            &get(&g, &format!("final.{scale_name}")).1.to_f32_vec(),
            initial.by_name(&scale_name).unwrap().value.data(),
        );
        assert!(
            moved > 1e-4,
            "{}: torch moved it by only {moved:.2e}",
            p.name
        );
        let e = max_abs_diff(p.value.data(), &reference) / moved;
        let w = if scale_name != p.name {
            &mut worst_noise
        } else {
            &mut worst
        };
        if e > w.0 {
            *w = (e, p.name.clone());
        }
        let tol = if scale_name != p.name {
            NOISE_TOL
        } else {
            PARAM_TOL
        };
        if e > tol {
            failures.push(format!("{}: |ours - torch| / movement = {e:.2e}", p.name));
        }
    }
    println!("{backend:?}: worst loss rel err {worst_loss:.2e}, worst grad-norm rel err {worst_norm:.2e}");
    println!(
        "final parameters: worst |ours - torch| / movement {:.2e} ({})",
        worst.0, worst.1
    );
    println!(
        "k_proj biases (noise only): worst |ours - torch| / k_proj.weight movement {:.2e} ({})",
        worst_noise.0, worst_noise.1
    );
    assert!(
        failures.is_empty(),
        "tolerances {PARAM_TOL:e} / {NOISE_TOL:e} (k_proj.bias):\n{}",
        failures.join("\n")
    );
}

/// The optimiser alone (reference/golden/train/adamw.safetensors): torch.optim.AdamW + clip_grad_norm_ on
/// recorded gradients spanning 1e-8 .. 10, two groups, betas/eps changed at step 3, one parameter frozen
/// for two steps. Our update mirrors torch's op order in f32, so the only difference is the clip scale
/// (torch reduces the norm in f32): tolerance 1e-6 relative to max |param| (and to max |state|).
#[test]
fn adamw_alone_matches_torch_on_recorded_gradients() {
    let path = golden("train/adamw.safetensors");
    let g = read_safetensors(&path).unwrap();
    let (lrs, norms) = (
        metadata_list(&path, "lr"),
        metadata_list(&path, "grad_norm"),
    );
    let names = ["lin.weight", "lin.bias", "late.weight"];
    let mut store = culturemert_raw::autograd::ParamStore::new();
    for n in names {
        let (shape, data) = get(&g, &format!("init.{n}"));
        store
            .insert(n, Tensor::from_f32(shape, data.to_f32_vec()))
            .unwrap();
    }
    let mut opt = AdamW::new(groups(0)).unwrap();
    for (step, &lr) in lrs.iter().enumerate() {
        opt.groups = groups(usize::from(step >= 3));
        store.set_frozen(&["late.weight"], step < 2);
        store.zero_grad();
        for n in names {
            if let Some((_, grad)) = g.get(&format!("grad.{step}.{n}")) {
                let id = store.id(n).unwrap();
                store.get_mut(id).grad = Some(grad.to_f32_vec());
            }
        }
        let norm = clip_grad_norm(&mut store, 1.0);
        assert!(
            rel(norm.norm, norms[step]) < 1e-6,
            "step {step}: norm {} vs torch {}",
            norm.norm,
            norms[step]
        );
        opt.step(&mut store, lr).unwrap();
    }
    let mut worst = 0.0f64;
    for n in names {
        let st = opt.state(n).unwrap();
        assert_eq!(
            st.step as i32,
            ints(&g, &format!("step.{n}"))[0],
            "{n}: step count"
        );
        let pairs = [
            (
                store.by_name(n).unwrap().value.data().to_vec(),
                format!("final.{n}"),
            ),
            (st.exp_avg.clone(), format!("exp_avg.{n}")),
            (st.exp_avg_sq.clone(), format!("exp_avg_sq.{n}")),
        ];
        for (ours, key) in pairs {
            let theirs = get(&g, &key).1.to_f32_vec();
            let scale = theirs.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
            let e = max_abs_diff(&ours, &theirs) / scale;
            worst = worst.max(e);
            assert!(e <= 1e-6, "{key}: rel err {e:.2e}");
        }
    }
    println!("AdamW alone vs torch: worst rel err {worst:.2e} (params, exp_avg, exp_avg_sq)");
}

/// Mixed precision on the emulated device, against the f32 CPU tape on the same micro-batch: linear layers
/// on bf16 / f16 tensor-core GEMMs (f32 accumulation) change the loss and the gradient norm by about the
/// operand rounding (bf16: 2^-9 relative, f16: 2^-12): tolerances 1e-2 (bf16) and 2e-3 (f16), relative.
/// f16's loss scaling is exact (a power of two): the clipped gradient norm at scale 2^16 equals the one at
/// scale 1; and an overflowing scale skips the step and halves.
#[test]
fn mixed_precision_on_the_emulated_device() {
    let g = read_safetensors(&golden("train/golden.safetensors")).unwrap();
    let mut model = Mert::load(&golden("tiny_postln")).unwrap();
    let heads = load_heads(&mut model, &golden("loss/heads.safetensors"), 3).unwrap();
    let b = batch(&g, 0);
    let opts = ForwardOptions {
        feature_grad_mult: Some(0.1),
        ..Default::default()
    };
    let w = LossWeights::default();
    let mut tape = Tape::new();
    let parts = mert_loss(&mut tape, &model, &heads, &b, &w, &opts).unwrap();
    let cpu_loss = parts.total.data()[0] as f64;
    let mut store = model.params.clone();
    tape.backward(vec![(&parts.total, vec![1.0])], &mut store)
        .unwrap();
    let cpu_norm = clip_grad_norm(&mut store, f64::INFINITY).norm;

    let dev = common::device(Schedule::Forward);
    for (precision, tol) in [(Precision::Bf16, 1e-2), (Precision::F16, 2e-3)] {
        let mut t = CudaTrainer::new(&dev, &model, precision).unwrap();
        let loss = t.loss_backward(&heads, &b, &w, &opts, 1.0).unwrap().total as f64;
        let norm = t.clip_grad_norm(f64::INFINITY).unwrap().norm;
        println!(
            "{precision}: loss {loss:.6} vs f32 {cpu_loss:.6} (rel {:.2e}), grad norm {norm:.6} vs {cpu_norm:.6} (rel {:.2e})",
            rel(loss, cpu_loss),
            rel(norm, cpu_norm)
        );
        assert!(rel(loss, cpu_loss) <= tol, "{precision} loss");
        assert!(rel(norm, cpu_norm) <= tol, "{precision} grad norm");
        assert!(
            rel(loss, cpu_loss) > 0.0,
            "{precision}: identical to f32, so the GEMMs were not in half"
        );
        if precision == Precision::F16 {
            // Same step at loss scale 1: the unscaled norm must agree (powers of two are exact).
            t.scaler.as_mut().unwrap().scale = 1.0;
            t.zero_grads().unwrap();
            t.loss_backward(&heads, &b, &w, &opts, 1.0).unwrap();
            let unscaled = t.clip_grad_norm(f64::INFINITY).unwrap().norm;
            println!("f16 grad norm at loss scale 65536 {norm:.9} vs 1 {unscaled:.9}");
            assert!(
                rel(norm, unscaled) <= 1e-5,
                "loss scaling changed the gradients"
            );
            // An overflowing scale: the norm is non-finite, the step is flagged and the scale halves.
            t.scaler.as_mut().unwrap().scale = 1e38;
            t.zero_grads().unwrap();
            t.loss_backward(&heads, &b, &w, &opts, 1.0).unwrap();
            let n = t.clip_grad_norm(1.0).unwrap();
            assert!(!n.is_finite() && t.last_overflow);
            assert_eq!(t.scaler.as_ref().unwrap().scale, 5e37);
        }
    }
}
