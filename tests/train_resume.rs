//! `train` killed with SIGKILL after a checkpoint resumes bit-identically: every step's metrics (loss, lr,
//! grad norm, loss parts) and the final model equal those of an uninterrupted run. Also: the written
//! `model/` loads back and the loss of the run falls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OVERRIDES: [&str; 13] = [
    "stages.0.steps=5",
    "stages.1.steps=4",
    "stages.2.steps=4",
    "stages.0.batch_clips=2",
    "stages.1.batch_clips=2",
    "stages.2.batch_clips=2",
    "stages.0.grad_accumulation=1",
    "stages.1.grad_accumulation=2",
    "stages.2.grad_accumulation=1",
    "data.crop_seconds=1.0",
    "stages.0.warmup_fraction=0.2",
    "objective.mixup_prob=0.5",
    "objective.codebooks=2",
];

fn train_cmd(run_dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_culturemert-raw"));
    c.args([
        "train",
        "--quiet",
        "--threads",
        "2",
        "--checkpoint-every",
        "3",
        "--run-dir",
    ])
    .arg(run_dir);
    for o in OVERRIDES {
        c.args(["--set", o]);
    }
    c.args(extra);
    c
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-train-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The metrics without the wall-clock fields.
fn deterministic(rows: &[serde_json::Value]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            let o = r.as_object_mut().unwrap();
            for key in [
                "audio_seconds_per_second",
                "data_wait_ms",
                "data_audio_seconds_per_second",
            ] {
                o.remove(key);
            }
            r
        })
        .collect()
}

#[test]
fn sigkill_then_resume_reproduces_the_uninterrupted_run() {
    let full = scratch("full");
    let st = train_cmd(&full, &[]).status().unwrap();
    assert!(st.success(), "uninterrupted run failed");
    let reference = deterministic(&metrics(&full));
    assert_eq!(reference.len(), 13);

    // Kill the second run with SIGKILL once its first checkpoint (after step 3) exists.
    let killed = scratch("killed");
    let mut child = train_cmd(&killed, &[]).spawn().unwrap();
    let latest = killed.join("checkpoints/latest");
    let t0 = Instant::now();
    while !latest.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let before = metrics(&killed).len();
    assert!(
        before < reference.len(),
        "the run finished before the kill ({before} steps)"
    );

    let st = train_cmd(&killed, &["--resume"]).status().unwrap();
    assert!(st.success(), "resumed run failed");
    let resumed = deterministic(&metrics(&killed));
    assert_eq!(resumed.len(), reference.len());
    for (a, b) in resumed.iter().zip(&reference) {
        assert_eq!(a, b, "step {} differs after resume", b["step"]);
    }
    let wa = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(killed.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ after resume");
    let ha = std::fs::read(full.join("model/heads.safetensors")).unwrap();
    let hb = std::fs::read(killed.join("model/heads.safetensors")).unwrap();
    assert!(ha == hb, "final heads differ after resume");

    // The written model loads as an HF-layout directory and the loss plot exists.
    culturemert_raw::model::mert::Mert::load(&full.join("model")).unwrap();
    assert!(std::fs::read_to_string(full.join("loss.svg"))
        .unwrap()
        .contains("<polyline"));
    // The schedule restarts at the stage boundary: stage 0 ends at its lr_min, stage 1 starts near its peak.
    let lr: Vec<f64> = reference
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    assert!(
        lr[5] > 2.0 * lr[4],
        "no re-warming at the stage boundary: {lr:?}"
    );
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&killed);
}

/// A short run on the emulated CUDA device: `--stop-after` then `--resume` reproduces the uninterrupted
/// device run bit for bit (values and moments round-trip through the checkpoint), and every step's loss
/// equals the CPU run's to 1e-5 relative (f32 summation order is the only difference).
#[test]
fn emu_device_run_resumes_exactly_and_matches_the_cpu() {
    let overrides = [
        "stages.0.steps=2",
        "stages.1.steps=2",
        "stages.2.steps=2",
        "stages.2.warmup_steps=1",
        "stages.0.batch_clips=1",
        "stages.1.batch_clips=2",
        "stages.2.batch_clips=1",
        "stages.0.grad_accumulation=1",
        "stages.1.grad_accumulation=2",
        "stages.2.grad_accumulation=1",
        "data.crop_seconds=0.6",
        "objective.codebooks=2",
    ];
    let run = |dir: &Path, device: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_culturemert-raw"));
        c.args([
            "train",
            "--quiet",
            "--threads",
            "2",
            "--checkpoint-every",
            "2",
        ]);
        c.args(["--device", device, "--run-dir"]).arg(dir);
        for o in overrides {
            c.args(["--set", o]);
        }
        let st = c.args(extra).status().unwrap();
        assert!(st.success(), "train --device {device} {extra:?} failed");
    };
    let (cpu, full, resumed) = (
        scratch("emu-cpu"),
        scratch("emu-full"),
        scratch("emu-resumed"),
    );
    run(&cpu, "cpu", &[]);
    run(&full, "emu", &[]);
    run(&resumed, "emu", &["--stop-after", "3"]);
    assert_eq!(metrics(&resumed).len(), 3);
    run(&resumed, "emu", &["--resume"]);
    let (c, f, r) = (
        deterministic(&metrics(&cpu)),
        deterministic(&metrics(&full)),
        deterministic(&metrics(&resumed)),
    );
    assert_eq!(f.len(), 6);
    assert_eq!(
        r, f,
        "resumed device run differs from the uninterrupted one"
    );
    let wf = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let wr = std::fs::read(resumed.join("model/model.safetensors")).unwrap();
    assert!(wf == wr, "final device weights differ after resume");
    for (a, b) in f.iter().zip(&c) {
        for key in ["loss", "codebook_ce", "cqt_mse", "feature_penalty", "lr"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            let e = (x - y).abs() / y.abs().max(1e-12);
            assert!(
                e <= 1e-5,
                "step {} {key}: emu {x} vs cpu {y} (rel {e:.2e})",
                a["step"]
            );
        }
    }
    for d in [cpu, full, resumed] {
        let _ = std::fs::remove_dir_all(d);
    }
}
