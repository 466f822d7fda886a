//! The training input pipeline (src/train/pipeline.rs): the batches are byte-identical for 0, 1 and 3
//! background workers and when the queue restarts at a later step (resume); an unreadable file reaches
//! the loop as an error naming it, without a hang; `train --data-workers 3 --stop-after` then
//! `--resume` reproduces an uninterrupted inline run bit for bit; on the emulated device the CQT
//! targets computed there give the losses of the host CQT.

use culturemert_raw::audio::wav::write_wav_i16;
use culturemert_raw::model::config::MertConfig;
use culturemert_raw::model::rp_teacher::{RandomProjectionTeacher, RpConfig};
use culturemert_raw::train::config::TrainConfig;
use culturemert_raw::train::data::{DataPipeline, Dataset};
use culturemert_raw::train::pipeline::{batch_order, BatchRecipe, Prefetcher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

mod common;

const TINY: &str = include_str!("../configs/tiny-demo.json");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The demo recipe, short: 3 + 2 + 2 steps, micro-batches of 2, accumulation 2 in stage 1.
fn config() -> TrainConfig {
    let overrides: Vec<String> = [
        "stages.0.steps=3",
        "stages.1.steps=2",
        "stages.2.steps=2",
        "stages.0.batch_clips=2",
        "stages.1.batch_clips=4",
        "stages.2.batch_clips=2",
        "stages.0.grad_accumulation=1",
        "stages.1.grad_accumulation=2",
        "stages.2.grad_accumulation=1",
        "data.crop_seconds=0.5",
        "data.segment_seconds=1.0",
        "objective.mixup_prob=0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    TrainConfig::preset("demo", &overrides).unwrap()
}

/// 3 s WAV files at 44.1 kHz (the pipeline resamples them to 24 kHz), one per `seeds` entry.
fn write_clips(dir: &Path, seeds: &[u64]) {
    for &s in seeds {
        let samples = common::random(3 * 44100, s, -0.5, 0.5);
        write_wav_i16(&dir.join(format!("clip{s}.wav")), &samples, 44100).unwrap();
    }
}

/// The demo's datasets: "western" from WAV files in `dir`, the others in memory.
fn pipeline(cfg: &TrainConfig, dir: &Path) -> DataPipeline {
    let datasets = cfg
        .datasets
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut spec = spec.clone();
            if spec.name == "western" {
                spec.path = dir.display().to_string();
                Dataset::from_path(spec).unwrap()
            } else {
                let clips = (0..3)
                    .map(|c| common::random(24000 + 4000 * c, (i * 10 + c) as u64, -0.3, 0.3))
                    .collect();
                Dataset::from_memory(spec, clips).unwrap()
            }
        })
        .collect();
    let o = &cfg.objective;
    let teacher = RandomProjectionTeacher::new(RpConfig {
        codebooks: o.codebooks,
        codebook_size: o.codebook_size,
        seed: cfg.seed,
        ..Default::default()
    })
    .unwrap();
    DataPipeline::new(datasets, cfg.data.clone(), Arc::new(teacher), cfg.seed).unwrap()
}

/// Every prepared batch of steps `start..total` as bytes, in delivery order.
fn all_batches(recipe: &BatchRecipe<'_>, start: usize, workers: usize) -> Vec<Vec<u8>> {
    let order = batch_order(recipe.cfg, start, recipe.cfg.total_steps());
    let n = order.len();
    std::thread::scope(|scope| {
        let mut p = Prefetcher::start(scope, recipe, order.clone(), workers, 2);
        (0..n)
            .map(|i| {
                let (b, _) = p.next_batch().unwrap();
                assert_eq!((b.step, b.micro), order[i], "delivered out of order");
                let mut bytes = Vec::new();
                let x = &b.batch;
                bytes.extend(x.audio.data().iter().flat_map(|v| v.to_le_bytes()));
                bytes.extend(x.codes.iter().flat_map(|v| v.to_le_bytes()));
                bytes.extend(x.cqt.iter().flat_map(|v| v.to_le_bytes()));
                bytes.extend(&x.mask);
                for v in x.clean_audio.iter().flatten() {
                    bytes.extend(v.to_le_bytes());
                }
                bytes.extend((x.cqt_frames as u64).to_le_bytes());
                bytes
            })
            .collect()
    })
}

#[test]
fn batches_do_not_depend_on_the_number_of_workers_or_the_start() {
    let dir = scratch("workers");
    write_clips(&dir, &[1, 2, 3]);
    let cfg = config();
    let data = pipeline(&cfg, &dir);
    for device_cqt in [false, true] {
        let recipe = BatchRecipe {
            cfg: &cfg,
            data: &data,
            model: MertConfig::from_json_str(TINY).unwrap(),
            device_cqt,
        };
        let inline = all_batches(&recipe, 0, 0);
        // 3 + 2 x 2 + 2 micro-batches
        assert_eq!(inline.len(), 9);
        for workers in [1, 3] {
            let threaded = all_batches(&recipe, 0, workers);
            assert!(
                threaded == inline,
                "{workers} workers (device_cqt {device_cqt}) give other batches than inline"
            );
        }
        // A resume at step 4 (stage 1, second step) restarts the queue at (4, 0): the same batches.
        let resumed = all_batches(&recipe, 4, 3);
        assert!(
            resumed == inline[5..],
            "batches after a restart at step 4 differ"
        );
        // The micro-batches of a step differ (no draw repeats).
        assert!(inline[3] != inline[4]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_file_reaches_the_loop_as_an_error_naming_it() {
    let dir = scratch("corrupt");
    write_clips(&dir, &[1]);
    std::fs::write(dir.join("broken.wav"), b"RIFF....WAVEnot audio at all").unwrap();
    let cfg = config();
    let data = pipeline(&cfg, &dir);
    let recipe = BatchRecipe {
        cfg: &cfg,
        data: &data,
        model: MertConfig::from_json_str(TINY).unwrap(),
        device_cqt: false,
    };
    for workers in [0, 3] {
        let order = batch_order(&cfg, 0, cfg.total_steps());
        let err = std::thread::scope(|scope| {
            let mut p = Prefetcher::start(scope, &recipe, order.clone(), workers, 2);
            for _ in 0..order.len() {
                if let Err(e) = p.next_batch() {
                    return format!("{e:#}");
                }
            }
            panic!("{workers} workers: no batch drew the broken file");
        });
        assert!(err.contains("broken.wav"), "{workers} workers: {err}");
        assert!(err.contains("preparing micro-batch"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train(run_dir: &Path, overrides: &[&str], extra: &[&str]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_culturemert-raw"));
    c.args([
        "train",
        "--quiet",
        "--threads",
        "2",
        "--checkpoint-every",
        "2",
    ]);
    c.arg("--run-dir").arg(run_dir);
    for o in overrides {
        c.args(["--set", o]);
    }
    let st = c.args(extra).status().unwrap();
    assert!(st.success(), "train {extra:?} failed");
}

const SHORT: [&str; 11] = [
    "stages.0.steps=3",
    "stages.1.steps=2",
    "stages.2.steps=2",
    "stages.0.batch_clips=2",
    "stages.1.batch_clips=2",
    "stages.2.batch_clips=2",
    "stages.0.grad_accumulation=1",
    "stages.1.grad_accumulation=2",
    "stages.2.grad_accumulation=1",
    "data.crop_seconds=0.6",
    "objective.codebooks=2",
];

#[test]
fn resume_with_workers_reproduces_the_inline_run() {
    let (full, resumed) = (scratch("inline"), scratch("resumed"));
    train(&full, &SHORT, &["--data-workers", "0"]);
    train(
        &resumed,
        &SHORT,
        &["--data-workers", "3", "--stop-after", "4"],
    );
    assert_eq!(metrics(&resumed).len(), 4);
    train(&resumed, &SHORT, &["--data-workers", "3", "--resume"]);
    let (a, b) = (metrics(&full), metrics(&resumed));
    assert_eq!(a.len(), 7);
    assert_eq!(b.len(), 7);
    for (x, y) in a.iter().zip(&b) {
        for key in ["loss", "grad_norm", "codebook_ce", "cqt_mse", "lr"] {
            assert_eq!(x[key], y[key], "step {} {key}", x["step"]);
        }
        for row in [x, y] {
            let wait = row["data_wait_ms"].as_f64().unwrap();
            let rate = row["data_audio_seconds_per_second"].as_f64().unwrap();
            assert!(wait >= 0.0 && rate > 0.0 && rate.is_finite(), "{row}");
        }
    }
    let wa = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(resumed.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ");
    for d in [full, resumed] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The CQT targets computed by the device kernels (from the clean audio the pipeline delivers) give
/// the training losses of the host CQT, on the emulator.
#[test]
fn device_cqt_targets_match_the_host_cqt_on_the_emulator() {
    let overrides = [
        "stages.0.steps=2",
        "stages.1.steps=1",
        "stages.2.steps=1",
        "stages.0.batch_clips=1",
        "stages.1.batch_clips=2",
        "stages.2.batch_clips=1",
        "stages.0.grad_accumulation=1",
        "stages.1.grad_accumulation=2",
        "stages.2.grad_accumulation=1",
        "data.crop_seconds=0.6",
        "objective.codebooks=2",
    ];
    let (host, device) = (scratch("emu-host-cqt"), scratch("emu-device-cqt"));
    train(&host, &overrides, &["--device", "emu", "--host-cqt"]);
    train(&device, &overrides, &["--device", "emu"]);
    let (h, d) = (metrics(&host), metrics(&device));
    assert_eq!(h.len(), 4);
    assert_eq!(d.len(), 4);
    for (a, b) in d.iter().zip(&h) {
        for key in ["loss", "cqt_mse", "codebook_ce", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            let e = (x - y).abs() / y.abs().max(1e-12);
            assert!(
                e <= 1e-6,
                "step {} {key}: device CQT {x} vs host CQT {y} (rel {e:.2e})",
                a["step"]
            );
        }
    }
    for dir in [host, device] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Crops of 44.1 kHz files are resampled alone, yet each equals a hop-aligned slice of its whole file
/// decoded and resampled to 24 kHz (the pipeline's former path), bit for bit.
#[test]
fn resampled_crops_are_slices_of_the_resampled_files() {
    let dir = scratch("crops");
    write_clips(&dir, &[4, 5]);
    let cfg = config();
    let data = pipeline(&cfg, &dir);
    let whole: Vec<Vec<f32>> = [4, 5]
        .iter()
        .map(|s| {
            culturemert_raw::audio::wav::load_mono(&dir.join(format!("clip{s}.wav")), 24000)
                .unwrap()
        })
        .collect();
    for step in 0..3 {
        let crops = data.batch(&cfg.stages[0], step, 0, 2).unwrap();
        assert!(crops.len > 0 && !crops.cqt.is_empty());
        for crop in crops.audio.chunks(crops.len) {
            let found = whole.iter().any(|w| {
                (0..=w.len() - crops.len)
                    .step_by(320)
                    .any(|s| w[s..s + crops.len] == *crop)
            });
            assert!(found, "step {step}: a crop is no slice of a resampled file");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
