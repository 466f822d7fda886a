//! Loading errors name what is wrong: bad config, missing / unexpected / mis-shaped tensors, missing files.
//! Also: a random model written by `save` loads back identically in both weight-norm spellings.

mod common;

use culturemert_raw::model::config::MertConfig;
use culturemert_raw::model::mert::Mert;
use culturemert_raw::model::weights::{read_safetensors, write_safetensors, WeightNormSpelling};
use culturemert_raw::tensor::Tensor;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    common::golden("tiny_postln")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-model-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_model(dst: &Path) {
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden_dir().join(f), dst.join(f)).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match Mert::load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

/// Rewrite model.safetensors through `edit` on its (name, tensor) list.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let raw = read_safetensors(&dir.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = raw
        .into_iter()
        .map(|(n, (s, d))| (n, Tensor::new(&s, d).unwrap()))
        .collect();
    edit(&mut tensors);
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
}

#[test]
fn missing_directory_and_missing_weights() {
    let e = load_err(Path::new("/nonexistent/culturemert-model"));
    assert!(e.contains("does not exist"), "{e}");
    let d = scratch("noweights");
    std::fs::copy(golden_dir().join("config.json"), d.join("config.json")).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("no model.safetensors or pytorch_model.bin"),
        "{e}"
    );
}

#[test]
fn bad_configs_are_reported() {
    let d = scratch("badcfg");
    copy_model(&d);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    assert!(load_err(&d).contains("not a valid MERT/HuBERT config"));

    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("config.json")).unwrap())
            .unwrap();
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    assert!(load_err(&d).contains("hidden_size"));

    let mut c = good.clone();
    c["num_attention_heads"] = serde_json::json!(5);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    assert!(load_err(&d).contains("not divisible by num_attention_heads"));

    let mut c = good.clone();
    c["conv_kernel"] = serde_json::json!([10, 3]);
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    assert!(load_err(&d).contains("same length"));

    let mut c = good;
    c["feat_extract_norm"] = serde_json::json!("batch");
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    assert!(load_err(&d).contains("feat_extract_norm"));
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let d = scratch("missing");
    copy_model(&d);
    edit_weights(&d, |t| {
        t.retain(|(n, _)| n != "encoder.layers.1.attention.k_proj.bias")
    });
    let e = load_err(&d);
    assert!(
        e.contains("missing tensors (1): encoder.layers.1.attention.k_proj.bias"),
        "{e}"
    );

    let d = scratch("unexpected");
    copy_model(&d);
    edit_weights(&d, |t| {
        t.push(("encoder.layers.9.extra.weight".into(), Tensor::zeros(&[3])))
    });
    let e = load_err(&d);
    assert!(
        e.contains("unexpected tensors (1): encoder.layers.9.extra.weight"),
        "{e}"
    );

    let d = scratch("misshaped");
    copy_model(&d);
    edit_weights(&d, |t| {
        let slot = t
            .iter_mut()
            .find(|(n, _)| n == "feature_projection.projection.bias")
            .unwrap();
        slot.1 = Tensor::zeros(&[7]);
    });
    let e = load_err(&d);
    assert!(
        e.contains("feature_projection.projection.bias is [7]"),
        "{e}"
    );
}

#[test]
fn save_and_reload_round_trip_in_both_spellings() {
    let cfg = MertConfig::from_file(&golden_dir().join("config.json")).unwrap();
    for spelling in [
        WeightNormSpelling::Legacy,
        WeightNormSpelling::Parametrizations,
    ] {
        let mut m = Mert::random(cfg.clone(), 42).unwrap();
        m.spelling = spelling;
        let d = scratch(&format!("roundtrip-{spelling:?}"));
        m.save(&d).unwrap();
        let names: Vec<String> = read_safetensors(&d.join("model.safetensors"))
            .unwrap()
            .into_keys()
            .collect();
        let new_style = names
            .iter()
            .any(|n| n.contains("parametrizations.weight.original0"));
        assert_eq!(new_style, spelling == WeightNormSpelling::Parametrizations);
        let back = Mert::load(&d).unwrap();
        assert_eq!(back.spelling, spelling);
        assert_eq!(back.config, m.config);
        for p in m.params.iter() {
            assert_eq!(
                back.params.by_name(&p.name).unwrap().value.data(),
                p.value.data(),
                "{}",
                p.name
            );
        }
    }
}
