//! The CUDA model on the emulator vs the CPU tape in training mode, where the goldens cannot reach:
//! hidden, attention-probability, activation and projection dropout, LayerDrop, time masking with
//! `masked_spec_embed`, the conv-feature gradient multiplier, a padded batch, a frozen conv stack, and a
//! seed on the conv features. Every hidden state and every trainable parameter's gradient must agree.
//! Tolerance: max |emu - cpu| <= 1e-4 * max |cpu| per tensor (f32, summation order only).

mod common;

use culturemert_raw::autograd::Tape;
use culturemert_raw::device::Schedule;
use culturemert_raw::model::config::MertConfig;
use culturemert_raw::model::cuda_mert::{CudaMert, Precision};
use culturemert_raw::model::mert::{ForwardOptions, Mert};
use culturemert_raw::tensor::Tensor;
use std::collections::HashMap;

const REL_TOL: f64 = 1e-4;

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
        / scale
}

/// Returns how many layers LayerDrop skipped.
fn case(stable_layer_norm: bool, freeze_convs: bool, seed: u64, schedule: Schedule) -> usize {
    let mut cfg = MertConfig::from_json_str(include_str!("../configs/tiny-demo.json")).unwrap();
    cfg.do_stable_layer_norm = stable_layer_norm;
    cfg.num_hidden_layers = 3;
    cfg.hidden_dropout = 0.1;
    cfg.attention_dropout = 0.2;
    cfg.activation_dropout = 0.15;
    cfg.feat_proj_dropout = 0.1;
    cfg.layerdrop = 0.3;
    let mut model = Mert::random(cfg.clone(), 11).unwrap();
    if freeze_convs {
        model.params.set_frozen(&["feature_extractor."], true);
    }
    let (batch, samples) = (2, 3001);
    let audio = common::random(batch * samples, seed, -0.5, 0.5);
    // The second clip is padded after 2300 samples.
    let sample_mask: Vec<u8> = (0..batch * samples)
        .map(|i| u8::from(i < samples || i - samples < 2300))
        .collect();
    let frames = cfg.frames_for_samples(samples);
    let mask_time: Vec<u8> = (0..batch * frames).map(|i| u8::from(i % 7 < 3)).collect();
    let opts = ForwardOptions {
        train: true,
        seed,
        mask_time: Some(mask_time),
        feature_grad_mult: Some(0.1),
    };
    let h = cfg.hidden_size;
    let n_hidden = cfg.num_hidden_layers + 1;
    let probes: Vec<Vec<f32>> = (0..n_hidden)
        .map(|i| common::random(batch * frames * h, seed + 100 + i as u64, -1.0, 1.0))
        .collect();
    let feat_probe = common::random(
        batch * frames * cfg.conv_dim[cfg.conv_dim.len() - 1],
        seed + 99,
        -1.0,
        1.0,
    );

    // CPU tape.
    let mut tape = Tape::new();
    let x = Tensor::from_f32(&[batch, samples], audio.clone());
    let out = model
        .forward(&mut tape, &x, Some(&sample_mask), &opts)
        .unwrap();
    let cpu_hidden: Vec<Vec<f32>> = out
        .hidden_states
        .iter()
        .map(|v| v.data().to_vec())
        .collect();
    // A layer LayerDrop skipped passes its input through unchanged.
    let skipped = cpu_hidden.windows(2).filter(|w| w[0] == w[1]).count();
    let mut seeds: Vec<_> = out
        .hidden_states
        .iter()
        .zip(&probes)
        .map(|(v, p)| (v, p.clone()))
        .collect();
    seeds.push((&out.features, feat_probe.clone()));
    let mut store = model.params.clone();
    tape.backward(seeds, &mut store).unwrap();
    let cpu_grads: HashMap<String, Vec<f32>> = store
        .iter()
        .filter_map(|p| p.grad.clone().map(|g| (p.name.clone(), g)))
        .collect();

    // Emulated device.
    let dev = common::device(schedule);
    let mut m = CudaMert::new(&dev, &model).unwrap();
    let fwd = m
        .forward(&audio, batch, samples, Some(&sample_mask), &opts, true)
        .unwrap();
    assert_eq!(fwd.frame_lengths, out.frame_lengths);
    for (i, want) in cpu_hidden.iter().enumerate() {
        let e = rel_err(&fwd.hidden_state(&dev, i).unwrap(), want);
        assert!(e <= REL_TOL, "hidden_states.{i}: rel err {e:.2e}");
    }
    let d_hidden = probes.iter().map(|p| Some(dev.htod(p).unwrap())).collect();
    m.backward(fwd, d_hidden, Some(dev.htod(&feat_probe).unwrap()))
        .unwrap();
    let emu_grads: HashMap<String, Vec<f32>> =
        m.params.download_grads(&dev).unwrap().into_iter().collect();
    let mut worst = (0.0f64, String::new());
    for p in model.params.iter() {
        if p.frozen {
            assert!(
                !emu_grads.contains_key(&p.name),
                "{}: frozen but has a device gradient",
                p.name
            );
            continue;
        }
        let want = cpu_grads
            .get(&p.name)
            .cloned()
            .unwrap_or_else(|| vec![0.0; p.value.numel()]);
        let got = &emu_grads[&p.name];
        let e = if want.iter().all(|&v| v == 0.0) {
            got.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64))
        } else if p.name.ends_with("k_proj.bias") {
            // An exactly-zero true gradient: both sides hold rounding noise (see model_golden.rs).
            continue;
        } else {
            rel_err(got, &want)
        };
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
        assert!(e <= REL_TOL, "grad of {}: rel err {e:.2e}", p.name);
    }
    println!(
        "stable_ln {stable_layer_norm} frozen convs {freeze_convs} seed {seed}: {skipped} layers dropped, {} gradients, worst {:.2e} ({})",
        emu_grads.len(),
        worst.0,
        worst.1
    );
    skipped
}

#[test]
fn post_ln_training_mode_with_every_dropout_and_layerdrop() {
    assert!(
        case(false, false, 5, Schedule::Forward) >= 1,
        "this seed should drop a layer"
    );
}

#[test]
fn pre_ln_training_mode_with_a_frozen_conv_stack() {
    case(true, true, 8, Schedule::Reverse);
}

/// bf16 / f16 on the emulated device (linear layers and, at head_dim 64, attention on tensor cores) vs
/// the f32 CPU tape, eval mode, padded batch. Operands are rounded to half (unit roundoff u = 2^-9 bf16,
/// 2^-12 f16) before every GEMM, so hidden states and gradients may differ by a small multiple of u
/// through the layers: tolerance 16u of max |cpu| per tensor (bf16 3.1e-2, f16 3.9e-3).
#[test]
fn half_precision_model_with_tensor_core_attention() {
    let mut cfg = MertConfig::from_json_str(include_str!("../configs/tiny-demo.json")).unwrap();
    cfg.hidden_size = 128;
    cfg.num_attention_heads = 2; // head_dim 64: the tensor-core attention kernels
    cfg.intermediate_size = 256;
    let model = Mert::random(cfg.clone(), 3).unwrap();
    let (batch, samples) = (2, 2801);
    let audio = common::random(batch * samples, 21, -0.5, 0.5);
    let sample_mask: Vec<u8> = (0..batch * samples)
        .map(|i| u8::from(i < samples || i - samples < 2000))
        .collect();
    let frames = cfg.frames_for_samples(samples);
    let n_hidden = cfg.num_hidden_layers + 1;
    let probes: Vec<Vec<f32>> = (0..n_hidden)
        .map(|i| common::random(batch * frames * cfg.hidden_size, 40 + i as u64, -1.0, 1.0))
        .collect();
    let opts = ForwardOptions::default();
    let mut tape = Tape::new();
    let x = Tensor::from_f32(&[batch, samples], audio.clone());
    let out = model
        .forward(&mut tape, &x, Some(&sample_mask), &opts)
        .unwrap();
    let cpu_hidden: Vec<Vec<f32>> = out
        .hidden_states
        .iter()
        .map(|v| v.data().to_vec())
        .collect();
    let seeds = out
        .hidden_states
        .iter()
        .zip(&probes)
        .map(|(v, p)| (v, p.clone()))
        .collect();
    let mut store = model.params.clone();
    tape.backward(seeds, &mut store).unwrap();

    let dev = common::device(Schedule::Forward);
    for (precision, u) in [
        (Precision::Bf16, 2f64.powi(-9)),
        (Precision::F16, 2f64.powi(-12)),
    ] {
        let tol = 16.0 * u;
        let mut m = CudaMert::new(&dev, &model).unwrap();
        m.precision = precision;
        let fwd = m
            .forward(&audio, batch, samples, Some(&sample_mask), &opts, true)
            .unwrap();
        let mut worst_h = 0.0f64;
        for (i, want) in cpu_hidden.iter().enumerate() {
            let e = rel_err(&fwd.hidden_state(&dev, i).unwrap(), want);
            worst_h = worst_h.max(e);
            assert!(
                e <= tol,
                "{precision} hidden_states.{i}: rel err {e:.2e} > {tol:.1e}"
            );
        }
        assert!(
            worst_h > 0.0,
            "{precision}: bit-identical to f32, so nothing ran in half"
        );
        let d_hidden = probes.iter().map(|p| Some(dev.htod(p).unwrap())).collect();
        m.backward(fwd, d_hidden, None).unwrap();
        let mut worst_g = (0.0f64, String::new());
        for (name, got) in m.params.download_grads(&dev).unwrap() {
            if name.ends_with("k_proj.bias") {
                continue; // exactly-zero true gradient (see model_golden.rs)
            }
            let Some(want) = store.by_name(&name).unwrap().grad.clone() else {
                // Unused on this path (masked_spec_embed without masking): no gradient at all.
                assert!(
                    got.iter().all(|&v| v == 0.0),
                    "{precision} {name}: gradient without a use"
                );
                continue;
            };
            let e = rel_err(&got, &want);
            if e > worst_g.0 {
                worst_g = (e, name.clone());
            }
            assert!(
                e <= tol,
                "{precision} grad of {name}: rel err {e:.2e} > {tol:.1e}"
            );
        }
        println!(
            "{precision}: hidden states worst {worst_h:.2e}, gradients worst {:.2e} ({}), tolerance {tol:.1e}",
            worst_g.0, worst_g.1
        );
    }
}
