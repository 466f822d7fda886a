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

#[test]
fn corpus_batches_equal_length_clips_on_the_device() {
    // a, b | bad | c, d | e: two device batches of two equal-length clips, a corrupt file between them
    // (its own error, the others unaffected) and a clip of another length on its own.
    use culturemert_raw::audio::wav::write_wav_f32;
    use culturemert_raw::embed::{embed_corpus, list_inputs, EmbedSettings};
    let dir = std::env::temp_dir().join(format!("cmr-embed-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut clips = Vec::new();
    for (k, (name, len)) in [
        ("a", 3600),
        ("b", 3600),
        ("c", 3600),
        ("d", 3600),
        ("e", 4000),
    ]
    .into_iter()
    .enumerate()
    {
        let x: Vec<f32> = (0..len)
            .map(|i| 0.5 * (i as f32 * (0.03 + 0.011 * k as f32)).sin())
            .collect();
        let p = dir.join(format!("{name}.wav"));
        write_wav_f32(&p, &x, 24000).unwrap();
        clips.push((p, x));
    }
    std::fs::write(dir.join("bad.wav"), b"not audio").unwrap();
    let order = ["a", "b", "bad", "c", "d", "e"].map(|n| dir.join(format!("{n}.wav")));
    let inputs = list_inputs(&order).unwrap();
    let model = Mert::load(&common::golden("tiny_postln")).unwrap();
    let dev = common::device(Schedule::Forward);
    let emu = Backend::Cuda(Box::new(CudaMert::new(&dev, &model).unwrap()));
    let settings = EmbedSettings {
        layers: vec![0, 2],
        pool: Pool::None,
        normalize: false,
        chunk: None,
    };
    let mut seen = Vec::new();
    let stats = embed_corpus(&inputs, &settings, &emu, |input, result| {
        let name = input.rel.to_string_lossy().to_string();
        match clips.iter().find(|(p, _)| *p == input.path) {
            Some((_, x)) => {
                let got = result.unwrap().tensor;
                let want = embed_samples(&model, x, &[0, 2], Pool::None, None).unwrap();
                assert_eq!(got.shape(), want.shape(), "{name}");
                let e = rel_err(got.data(), want.data());
                println!("{name}: rel err {e:.2e}");
                assert!(e <= 1e-5, "{name}: rel err {e:.2e}");
            }
            None => assert!(result.is_err(), "{name} should fail"),
        }
        seen.push(name);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        ["a.wav", "b.wav", "bad.wav", "c.wav", "d.wav", "e.wav"]
    );
    assert_eq!((stats.embedded, stats.failed), (5, 1));
    let _ = std::fs::remove_dir_all(&dir);
}
