//! Shipped presets: every file in presets/ is embedded and parses; `extends` merges as documented in
//! src/train/preset.rs (tables by key, `[[stages]]` by position, other values replaced).

use culturemert_raw::train::config::{TrainConfig, PRESETS};
use std::path::PathBuf;

fn presets_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("presets")
}

#[test]
fn every_preset_file_is_shipped_and_parses() {
    let mut files: Vec<String> = std::fs::read_dir(presets_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    files.sort();
    let mut shipped: Vec<String> = PRESETS.iter().map(|(n, _)| n.to_string()).collect();
    shipped.sort();
    assert_eq!(
        files, shipped,
        "presets/*.toml and the embedded PRESETS differ"
    );
    for (name, text) in PRESETS {
        let on_disk = std::fs::read_to_string(presets_dir().join(format!("{name}.toml"))).unwrap();
        assert_eq!(text, on_disk, "{name}: embedded text differs from the file");
        let cfg = TrainConfig::preset(name, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(cfg.name, name, "preset {name} names itself {:?}", cfg.name);
        // The same config through the file path (where `extends` may also be a relative path).
        let from_file = TrainConfig::from_file(&presets_dir().join(format!("{name}.toml")), &[]);
        assert_eq!(
            from_file.unwrap(),
            cfg,
            "{name}: file and embedded parse differ"
        );
    }
}

#[test]
fn single_tradition_presets_are_culturemert_with_other_lengths() {
    let base = TrainConfig::preset("culturemert", &[]).unwrap();
    for (name, s1, s2) in [
        ("makammert", 1350, 4500),
        ("hindustanimert", 1350, 4500),
        ("carnaticmert", 1350, 4500),
        ("lyramert", 450, 1125),
    ] {
        let cfg = TrainConfig::preset(name, &[]).unwrap();
        let mut expected = base.clone();
        expected.name = name.to_string();
        expected.description = cfg.description.clone();
        expected.stages[0].steps = s1;
        expected.stages[1].steps = s2;
        assert_eq!(cfg, expected, "{name}");
    }
    let alpha = TrainConfig::preset("culturemert-alpha10", &[]).unwrap();
    assert_eq!(alpha.objective.codebook_weight, 10.0);
    assert_eq!(alpha.stages, base.stages);
    assert_eq!(alpha.data, base.data);
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmr-presets-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn extends_merges_tables_stages_by_position_and_replaces_values() {
    let dir = temp_dir("merge");
    let file = dir.join("mine.toml");
    std::fs::write(
        &file,
        r#"extends = "demo"
name = "mine"
seed = 99
[objective]
mask_prob = 0.5
[[stages]]
steps = 7
trainable = ["encoder."]
[[stages]]
[[stages]]
[[stages]]
name = "extra"
steps = 3
lr_max = 1e-3
lr_min = 1e-4
betas = [0.9, 0.98]
eps = 1e-6
weight_decay = 0.0
batch_clips = 2
grad_accumulation = 1
clip_norm = 1.0
trainable = ["*"]
replay_fraction = 0.0
"#,
    )
    .unwrap();
    let cfg = TrainConfig::from_file(&file, &[]).unwrap();
    let demo = TrainConfig::preset("demo", &[]).unwrap();
    let mut expected = demo.clone();
    expected.name = "mine".into();
    expected.seed = 99;
    expected.objective.mask_prob = 0.5;
    expected.stages[0].steps = 7;
    expected.stages[0].trainable = vec!["encoder.".into()];
    let mut extra = demo.stages[0].clone();
    extra.name = "extra".into();
    extra.steps = 3;
    extra.warmup_fraction = None;
    extra.warmup_steps = None;
    extra.lr_max = 1e-3;
    extra.lr_min = 1e-4;
    extra.betas = [0.9, 0.98];
    extra.eps = 1e-6;
    extra.weight_decay = 0.0;
    extra.batch_clips = 2;
    extra.grad_accumulation = 1;
    extra.clip_norm = 1.0;
    extra.trainable = vec!["*".into()];
    extra.replay_fraction = 0.0;
    extra.datasets = vec![];
    assert_eq!(
        demo.stages.len(),
        3,
        "the test assumes demo has three stages"
    );
    expected.stages.push(extra);
    assert_eq!(cfg, expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn extends_follows_relative_files_and_reports_cycles_and_unknown_names() {
    let dir = temp_dir("chain");
    std::fs::write(dir.join("a.toml"), "extends = \"b.toml\"\nname = \"a\"\n").unwrap();
    std::fs::write(dir.join("b.toml"), "extends = \"culturemert\"\nseed = 5\n").unwrap();
    let a = TrainConfig::from_file(&dir.join("a.toml"), &[]).unwrap();
    let mut expected = TrainConfig::preset("culturemert", &[]).unwrap();
    expected.name = "a".into();
    expected.seed = 5;
    assert_eq!(a, expected);

    std::fs::write(dir.join("c.toml"), "extends = \"d.toml\"\n").unwrap();
    std::fs::write(dir.join("d.toml"), "extends = \"c.toml\"\n").unwrap();
    let err = format!(
        "{:#}",
        TrainConfig::from_file(&dir.join("c.toml"), &[]).unwrap_err()
    );
    assert!(err.contains("a cycle"), "{err}");

    std::fs::write(dir.join("e.toml"), "extends = \"no-such-preset\"\n").unwrap();
    let err = format!(
        "{:#}",
        TrainConfig::from_file(&dir.join("e.toml"), &[]).unwrap_err()
    );
    assert!(err.contains("unknown preset \"no-such-preset\""), "{err}");
    assert!(
        err.contains("culturemert"),
        "the error lists the presets: {err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
