//! `merge` with `pytorch_model.bin` inputs. The golden `tiny_postln_bin/pytorch_model.bin` was written by
//! torch.save (reference/make_golden_model.py) with the same weights as `tiny_postln/model.safetensors`,
//! so every merge with the .bin (as base or as model, as a directory or as the file) must equal, bit for
//! bit, the same merge with the safetensors twin; and both must equal theta_pre + lambda (theta - theta_pre)
//! computed directly. A base spelled with the new weight-norm names gets the .bin's legacy names mapped
//! onto its own.

mod common;

use culturemert_raw::merge::merge_dirs;
use culturemert_raw::model::weights::{read_safetensors, RawTensors};
use culturemert_raw::tensor::CpuData;
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-merge-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_model(dir: &Path, tensors: &RawTensors) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), d.to_le_bytes(), s.clone()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            let v = TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::copy(
        common::golden("tiny_postln/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

/// The golden tiny model with every value shifted by a deterministic pseudo-random amount.
fn perturbed() -> RawTensors {
    let mut t = read_safetensors(&common::golden("tiny_postln/model.safetensors")).unwrap();
    for (i, (_, (_, data))) in t.iter_mut().enumerate() {
        let v = data.to_f32_vec();
        let noise = common::random(v.len(), 100 + i as u64, -0.05, 0.05);
        *data = CpuData::F32(v.iter().zip(&noise).map(|(a, b)| a + b).collect());
    }
    t
}

fn merged(dir: &Path) -> RawTensors {
    read_safetensors(&dir.join("model.safetensors")).unwrap()
}

fn assert_same(a: &RawTensors, b: &RawTensors, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (k, (s, d)) in a {
        assert_eq!(s, &b[k].0, "{what}: {k}");
        assert_eq!(d.to_f32_vec(), b[k].1.to_f32_vec(), "{what}: {k}");
    }
}

#[test]
fn merge_from_torch_bin_equals_merge_from_safetensors() {
    let root = temp_dir("eq");
    let bin_dir = common::golden("tiny_postln_bin");
    let st_dir = common::golden("tiny_postln");
    let x_dir = root.join("x");
    let x = perturbed();
    write_model(&x_dir, &x);
    let lambda = 0.3;
    let run = |base: &Path, model: &Path, out: &str| {
        let out = root.join(out);
        merge_dirs(base, &[model.to_path_buf()], &[lambda], &out)
            .unwrap_or_else(|e| panic!("{out:?}: {e:#}"));
        merged(&out)
    };

    // The .bin as the base, and as the model (directory and file forms).
    let base_bin = run(&bin_dir, &x_dir, "base_bin");
    let base_st = run(&st_dir, &x_dir, "base_st");
    assert_same(&base_bin, &base_st, "base .bin vs base safetensors");
    let model_bin = run(&x_dir, &bin_dir, "model_bin");
    let model_file = run(&x_dir, &bin_dir.join("pytorch_model.bin"), "model_file");
    let model_st = run(&x_dir, &st_dir, "model_st");
    assert_same(&model_bin, &model_st, "model .bin vs model safetensors");
    assert_same(
        &model_file,
        &model_st,
        "model .bin file vs model safetensors",
    );
    assert!(
        !root.join("model_bin/.inputs").exists(),
        "converted inputs left in the output"
    );

    // Direct computation: theta_x + lambda (theta_golden - theta_x), f64 rounded once.
    let golden = read_safetensors(&st_dir.join("model.safetensors")).unwrap();
    for (k, (_, d)) in &model_st {
        let (xv, gv) = (x[k].1.to_f32_vec(), golden[k].1.to_f32_vec());
        for (i, &got) in d.to_f32_vec().iter().enumerate() {
            let want = (xv[i] as f64 + lambda * (gv[i] as f64 - xv[i] as f64)) as f32;
            assert!(
                (got - want).abs() <= f32::EPSILON * want.abs(),
                "{k}[{i}]: {got} vs {want}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn torch_bin_names_follow_the_base_weight_norm_spelling() {
    let root = temp_dir("spelling");
    let legacy_dir = root.join("legacy");
    let new_dir = root.join("new");
    let x = perturbed();
    write_model(&legacy_dir, &x);
    let mut renamed = x.clone();
    for (old, new) in [
        (
            "encoder.pos_conv_embed.conv.weight_g",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        ),
        (
            "encoder.pos_conv_embed.conv.weight_v",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        ),
    ] {
        let t = renamed.remove(old).expect("legacy name in the golden");
        renamed.insert(new.to_string(), t);
    }
    write_model(&new_dir, &renamed);
    let bin_dir = common::golden("tiny_postln_bin");
    merge_dirs(
        &new_dir,
        std::slice::from_ref(&bin_dir),
        &[0.5],
        &root.join("out_new"),
    )
    .unwrap();
    merge_dirs(&legacy_dir, &[bin_dir], &[0.5], &root.join("out_legacy")).unwrap();
    let (got, legacy) = (
        merged(&root.join("out_new")),
        merged(&root.join("out_legacy")),
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        renamed.keys().collect::<Vec<_>>(),
        "output keeps the base's names"
    );
    for (k, (s, d)) in &got {
        let legacy_name = k
            .replace("parametrizations.weight.original0", "weight_g")
            .replace("parametrizations.weight.original1", "weight_v");
        assert_eq!(s, &legacy[&legacy_name].0, "{k}");
        assert_eq!(d.to_f32_vec(), legacy[&legacy_name].1.to_f32_vec(), "{k}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
