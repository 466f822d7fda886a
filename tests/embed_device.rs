//! `embed` on the emulated CUDA device vs the CPU backend (the CPU path itself is golden-tested against
//! transformers in model_golden.rs): chunked and pooled outputs of a real-shaped clip on the tiny model,
//! equal-length chunks batched on the device.
//! Tolerance: max |emu - cpu| <= 1e-5 * max |cpu| (f32 on both sides, summation order only).

mod common;

use culturemert_raw::device::Schedule;
use culturemert_raw::embed::{embed_samples, embed_samples_on, Backend, Pool};
use culturemert_raw::model::cuda_mert::CudaMert;
use culturemert_raw::model::mert::Mert;

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

#[test]
fn embed_on_emu_matches_cpu_chunked_and_pooled() {
    let dir = common::golden("tiny_postln");
    let model = Mert::load(&dir).unwrap();
    // 0.3 s of a two-tone signal at 24 kHz, cut into 0.12 s chunks (the last one shorter).
    let samples: Vec<f32> = (0..7200)
        .map(|i| {
            let t = i as f32 / 24000.0;
            0.4 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * 331.0 * t).sin()
        })
        .collect();
    let dev = common::device(Schedule::Reverse);
    let emu = Backend::Cuda(Box::new(CudaMert::new(&dev, &model).unwrap()));
    let layers = [0, 2];
    // Chunks of 2880: [2880, 2880, 1440], the first two in one device batch; chunks of 1800: one batch of
    // four; no chunking: a single clip.
    for (pool, chunk) in [
        (Pool::None, Some(2880)),
        (Pool::Mean, Some(1800)),
        (Pool::Mean, None),
    ] {
        let cpu = embed_samples(&model, &samples, &layers, pool, chunk).unwrap();
        let got = embed_samples_on(&emu, &samples, &layers, pool, chunk).unwrap();
        assert_eq!(got.shape(), cpu.shape(), "{pool:?}");
        let e = rel_err(got.data(), cpu.data());
        println!(
            "{pool:?} chunk {chunk:?}: shape {:?}, rel err {e:.2e}",
            cpu.shape()
        );
        assert!(e <= 1e-5, "{pool:?}: rel err {e:.2e}");
    }
}
