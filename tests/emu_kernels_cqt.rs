//! The CQT kernels (kernels/cqt.cu through src/cuda/cqt.rs) on the host emulator, under two scheduling
//! orders, against (1) the f64 CPU plan `CqtPlan::forward` (MERT settings) and (2) the nnAudio 0.3.4
//! golden outputs that tests/cqt.rs uses. Ragged clips share one batch, zero-padded to the longest:
//! the padding adds only zeros after each clip, so a clip's frames are the first n_frames(len) rows.
//! Error metric: max |got - want| over a frame divided by that frame's maximum of `want`.
//! Kernels launched here: cqt_block_fft_columns, cqt_block_fft_rows, cqt_real_spectrum, cqt_fold_bins.

use culturemert_raw::audio::cqt::CqtPlan;
use culturemert_raw::cuda::cqt::CqtDevicePlan;
use culturemert_raw::device::{CudaDevice, Schedule};
use safetensors::SafeTensors;
use std::f64::consts::PI;
use std::time::Instant;

mod common;
use common::random;

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];
fn golden_file() -> std::path::PathBuf {
    common::golden("cqt.safetensors")
}
const SR: f64 = 24000.0;

/// A linear chirp 40 Hz -> 9 kHz over `secs` plus uniform noise (seeded), `n` samples.
fn chirp_noise(n: usize, seed: u64) -> Vec<f32> {
    let noise = random(n, seed, -0.1, 0.1);
    let secs = n as f64 / SR;
    let (f0, f1) = (40.0, 9000.0);
    (0..n)
        .map(|i| {
            let t = i as f64 / SR;
            let phase = 2.0 * PI * (f0 * t + 0.5 * (f1 - f0) / secs * t * t);
            (0.5 * phase.sin()) as f32 + noise[i]
        })
        .collect()
}

/// Clips zero-padded to the longest, back to back: ([batch, samples], samples).
fn padded_batch(clips: &[&[f32]]) -> (Vec<f32>, usize) {
    let samples = clips.iter().map(|c| c.len()).max().unwrap();
    let mut audio = vec![0f32; clips.len() * samples];
    for (b, c) in clips.iter().enumerate() {
        audio[b * samples..b * samples + c.len()].copy_from_slice(c);
    }
    (audio, samples)
}

/// Largest per-frame error relative to the frame maximum of `want` ([frames, n_bins] rows).
fn max_err_rel_frame(got: &[f32], want: &[f32], n_bins: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    got.chunks_exact(n_bins)
        .zip(want.chunks_exact(n_bins))
        .map(|(g, w)| {
            let fmax = w.iter().cloned().fold(0f32, f32::max) as f64;
            assert!(fmax > 0.0, "silent reference frame");
            g.iter()
                .zip(w)
                .map(|(&a, &b)| {
                    assert!(a.is_finite(), "non-finite CQT value {a}");
                    (a as f64 - b as f64).abs() / fmax
                })
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// Runs `clips` as one padded batch and returns each clip's own frames.
fn device_cqt(dev: &CudaDevice, plan: &CqtDevicePlan, clips: &[&[f32]]) -> Vec<Vec<f32>> {
    let (audio, samples) = padded_batch(clips);
    let d_audio = dev.htod(&audio).unwrap();
    let out = plan.forward(dev, &d_audio, clips.len(), samples).unwrap();
    let out = dev.dtoh(&out).unwrap();
    let (frames, nb) = (plan.n_frames(samples), plan.n_bins());
    assert_eq!(out.len(), clips.len() * frames * nb);
    clips
        .iter()
        .enumerate()
        .map(|(b, c)| {
            let f = plan.n_frames(c.len());
            out[b * frames * nb..(b * frames + f) * nb].to_vec()
        })
        .collect()
}

#[test]
fn cqt_matches_cpu_plan_on_ragged_chirps() {
    let cpu = CqtPlan::mert_shared();
    // 0.37 s (28 frames, one block) and 2.9 s (218 frames: a full block of 205 and a ragged one of 13)
    let short = chirp_noise(8880, 1);
    let long = chirp_noise(69600, 2);
    let want: Vec<Vec<f32>> = [&short, &long].iter().map(|c| cpu.forward(c).1).collect();
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let plan = CqtDevicePlan::new(&dev, cpu).unwrap();
        let t0 = Instant::now();
        let got = device_cqt(&dev, &plan, &[&short, &long]);
        let batch_time = t0.elapsed();
        let alone = device_cqt(&dev, &plan, &[&short]);
        for (name, g, w) in [
            ("0.37 s in batch", &got[0], &want[0]),
            ("2.9 s in batch", &got[1], &want[1]),
            ("0.37 s alone", &alone[0], &want[0]),
        ] {
            let err = max_err_rel_frame(g, w, 336);
            println!("{order:?} {name}: max err {err:.3e} of the frame max (batch {batch_time:?})");
            // f32 FFTs of 2^16 points + f32 folds vs the f64 CPU plan
            assert!(err < 2e-5, "{order:?} {name}: err {err:e}");
        }
        assert_eq!(
            alone[0], got[0],
            "{order:?}: a clip's frames depend on its batch"
        );
    }
}

/// Small plans whose packed FFT size M = Lb/2 = 2^11 is not a square (four-step 32 x 64), with
/// several blocks per clip and other fold sizes: hop 96 (s = 32, P = 128, 22 frames per block) and an
/// odd hop 75 (s = 1, P = Lb = 4096, 28 frames per block).
#[test]
fn cqt_matches_cpu_on_small_non_square_plans() {
    for hop in [96usize, 75] {
        let cpu = CqtPlan::new(24000, hop, 260.0, 24, 12).unwrap();
        assert_eq!(cpu.block_len(), 4096);
        let clips = [chirp_noise(5003, 3), chirp_noise(1234, 4)];
        let want: Vec<Vec<f32>> = clips.iter().map(|c| cpu.forward(c).1).collect();
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let plan = CqtDevicePlan::new(&dev, &cpu).unwrap();
            let got = device_cqt(&dev, &plan, &[&clips[0], &clips[1]]);
            for i in 0..2 {
                let err = max_err_rel_frame(&got[i], &want[i], 24);
                println!("hop {hop} {order:?} clip {i}: max err {err:.3e} of the frame max");
                assert!(err < 2e-5, "hop {hop} {order:?} clip {i}: err {err:e}");
            }
        }
    }
}

#[test]
fn cqt_matches_nnaudio_golden() {
    let bytes = std::fs::read(golden_file()).expect("golden file");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let names = ["short", "chords"];
    let audio: Vec<Vec<f32>> = names.iter().map(|n| read(&format!("{n}.audio"))).collect();
    let want: Vec<Vec<f32>> = names.iter().map(|n| read(&format!("{n}.cqt"))).collect();
    let dev = common::device(Schedule::Forward);
    let plan = CqtDevicePlan::new(&dev, CqtPlan::mert_shared()).unwrap();
    let got = device_cqt(&dev, &plan, &[&audio[0], &audio[1]]);
    for i in 0..2 {
        let err = max_err_rel_frame(&got[i], &want[i], 336);
        println!(
            "{}: vs nnAudio max err {err:.3e} of the frame max",
            names[i]
        );
        // the CPU plan is within 4.0e-6 of these goldens (tests/cqt.rs); f32 device FFTs add to it
        assert!(err < 2e-5, "{}: err {err:e}", names[i]);
    }
}

#[test]
fn cqt_rejects_empty_and_short_audio() {
    let dev = common::device(Schedule::Forward);
    let plan = CqtDevicePlan::new(&dev, CqtPlan::mert_shared()).unwrap();
    let audio = dev.htod(&[0.5f32; 100]).unwrap();
    let empty = plan.forward(&dev, &audio, 0, 100).unwrap_err().to_string();
    assert!(empty.contains("empty input"), "{empty}");
    let empty = plan.forward(&dev, &audio, 1, 0).unwrap_err().to_string();
    assert!(empty.contains("empty input"), "{empty}");
    let short = plan.forward(&dev, &audio, 2, 60).unwrap_err().to_string();
    assert!(short.contains("120 needed"), "{short}");
}
