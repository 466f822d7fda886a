//! `embed --out-dir` at corpus scale, through the binary: 8 clips in nested directories plus 2 corrupt
//! files give 6 outputs (each equal to embedding its clip directly through the library), 2 lines in
//! errors.tsv and a non-zero exit; `--resume` redoes only missing or invalid outputs (a valid output
//! planted with other values survives it, proving it was not recomputed). Also: input listing
//! (directories, manifests) and the `--device auto` fallback.

mod common;

use culturemert_raw::audio::wav::{load_mono, write_wav_f32};
use culturemert_raw::device::{CudaDevice, Device};
use culturemert_raw::embed::out_dir::{ERRORS_FILE, TENSOR};
use culturemert_raw::embed::{embed_samples, list_inputs, Pool};
use culturemert_raw::model::mert::Mert;
use culturemert_raw::model::weights::{read_safetensors, write_safetensors};
use culturemert_raw::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-embed-corpus-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 0.2 s at 24 kHz: a tone whose pitch depends on `k`, so every clip's embedding differs.
fn clip(k: usize) -> Vec<f32> {
    let f = 180.0 + 37.0 * k as f32;
    (0..4800)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * f * i as f32 / 24000.0).sin())
        .collect()
}

/// Writes 8 clips (4 in `a/`, 4 in `b/c/`) and 2 corrupt files; returns the good relative paths.
fn make_corpus(root: &Path) -> Vec<String> {
    let mut good = Vec::new();
    for k in 0..8 {
        let rel = if k < 4 {
            format!("a/clip{k}.wav")
        } else {
            format!("b/c/clip{k}.wav")
        };
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_wav_f32(&p, &clip(k), 24000).unwrap();
        good.push(rel);
    }
    std::fs::write(
        root.join("a/garbage.wav"),
        b"this is not a RIFF file at all",
    )
    .unwrap();
    // A FLAC stream marker and nothing after it.
    std::fs::write(root.join("b/truncated.flac"), b"fLaC\0\0").unwrap();
    std::fs::write(
        root.join("b/notes.txt.bak"),
        b"ignored: not an audio extension",
    )
    .unwrap();
    good
}

fn embed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_culturemert-raw"))
        .arg("embed")
        .args(args)
        .output()
        .expect("running culturemert-raw")
}

fn output_of(out: &Path, rel: &str) -> PathBuf {
    out.join(format!("{rel}.safetensors"))
}

fn read_embedding(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let raw = read_safetensors(path).unwrap();
    let (shape, data) = &raw[TENSOR];
    (shape.clone(), data.to_f32_vec())
}

#[test]
fn out_dir_reports_failures_and_resume_skips_finished_outputs() {
    let root = temp_dir("run");
    let audio = root.join("audio");
    let out = root.join("out");
    let good = make_corpus(&audio);
    let model_dir = common::golden("tiny_postln");
    let model_arg = model_dir.to_str().unwrap();
    let (audio_arg, out_arg) = (audio.to_str().unwrap(), out.to_str().unwrap());
    let common_args = [
        "--model",
        model_arg,
        "--device",
        "cpu",
        "--layers",
        "0,2",
        "--pool",
        "mean",
        "--out-dir",
        out_arg,
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = common_args.to_vec();
        a.extend_from_slice(extra);
        a.push(audio_arg);
        embed(&a)
    };

    let first = run(&[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    println!("{stderr}");
    assert!(
        !first.status.success(),
        "2 corrupt inputs must fail the run"
    );
    assert!(stderr.contains("2 input(s) failed"), "{stderr}");

    // errors.tsv: exactly the two corrupt files, path TAB non-empty reason.
    let errors = std::fs::read_to_string(out.join(ERRORS_FILE)).unwrap();
    let mut failed: Vec<&str> = errors
        .lines()
        .map(|l| {
            let (path, reason) = l.split_once('\t').expect("path TAB reason");
            assert!(!reason.trim().is_empty(), "{l}");
            path
        })
        .collect();
    failed.sort();
    let want_failed = [
        audio.join("a/garbage.wav").display().to_string(),
        audio.join("b/truncated.flac").display().to_string(),
    ];
    assert_eq!(failed, want_failed);

    // Six outputs mirroring the input tree, each equal to the library's direct embedding of the clip.
    let model = Mert::load(&model_dir).unwrap();
    let written: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".safetensors"))
        .collect();
    assert_eq!(written.len(), good.len());
    for rel in &good {
        let samples = load_mono(&audio.join(rel), 24000).unwrap();
        let want = embed_samples(&model, &samples, &[0, 2], Pool::Mean, None).unwrap();
        let (shape, got) = read_embedding(&output_of(&out, rel));
        assert_eq!(shape, want.shape(), "{rel}");
        let err = common::max_rel_err(&got, want.data());
        assert!(err <= 1e-6, "{rel}: max rel err {err:.2e}");
    }

    // Prepare the resume: plant a valid output with other values (must be kept), delete one (must be
    // recomputed), truncate one (invalid: must be recomputed).
    let planted = output_of(&out, &good[0]);
    let (shape, _) = read_embedding(&planted);
    let marker = Tensor::from_f32(&shape, vec![7.0; shape.iter().product()]);
    let meta = safetensors::SafeTensors::read_metadata(&std::fs::read(&planted).unwrap())
        .unwrap()
        .1
        .metadata()
        .clone();
    write_safetensors(&planted, &[(TENSOR.to_string(), marker)], meta).unwrap();
    std::fs::remove_file(output_of(&out, &good[5])).unwrap();
    let truncated = output_of(&out, &good[6]);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    let second = run(&["--resume"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    println!("{stderr}");
    assert!(!second.status.success(), "the corrupt inputs still fail");
    // 10 inputs: the 6 valid outputs (the planted one among them) skipped; the 2 missing or invalid
    // ones redone and the 2 corrupt inputs retried.
    assert!(
        stderr.contains("10 input(s): 2 written, 6 skipped (already done), 2 failed"),
        "{stderr}"
    );
    let (_, kept) = read_embedding(&planted);
    assert!(
        kept.iter().all(|&v| v == 7.0),
        "a valid output was recomputed"
    );
    for rel in [&good[5], &good[6]] {
        let samples = load_mono(&audio.join(rel), 24000).unwrap();
        let want = embed_samples(&model, &samples, &[0, 2], Pool::Mean, None).unwrap();
        let (_, got) = read_embedding(&output_of(&out, rel));
        assert!(common::max_rel_err(&got, want.data()) <= 1e-6, "{rel}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join(ERRORS_FILE))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // Different settings make the existing outputs invalid: --resume with --layers 1 redoes all 8.
    let mut a: Vec<&str> = common_args.to_vec();
    a[5] = "1";
    a.extend_from_slice(&["--resume", audio_arg]);
    let third = embed(&a);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        stderr.contains("10 input(s): 8 written, 0 skipped"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn directories_and_manifests_list_inputs_with_relative_names() {
    let root = temp_dir("list");
    make_corpus(&root.join("audio"));
    std::fs::write(
        root.join("list.txt"),
        "# a comment\naudio/a/clip1.wav\n\n./audio/b/c/clip4.wav\n../elsewhere/x.mp3\n",
    )
    .unwrap();
    let got = list_inputs(&[root.join("audio/b"), root.join("list.txt")]).unwrap();
    let pairs: Vec<(PathBuf, PathBuf)> = got.into_iter().map(|i| (i.path, i.rel)).collect();
    let b = root.join("audio/b");
    let want = vec![
        (b.join("c/clip4.wav"), PathBuf::from("c/clip4.wav")),
        (b.join("c/clip5.wav"), PathBuf::from("c/clip5.wav")),
        (b.join("c/clip6.wav"), PathBuf::from("c/clip6.wav")),
        (b.join("c/clip7.wav"), PathBuf::from("c/clip7.wav")),
        (b.join("truncated.flac"), PathBuf::from("truncated.flac")),
        (
            root.join("audio/a/clip1.wav"),
            PathBuf::from("audio/a/clip1.wav"),
        ),
        (
            root.join("./audio/b/c/clip4.wav"),
            PathBuf::from("audio/b/c/clip4.wav"),
        ),
        (root.join("../elsewhere/x.mp3"), PathBuf::from("x.mp3")),
    ];
    assert_eq!(pairs, want);
    // The same file name reached twice from different places is refused (outputs would collide).
    let dup = list_inputs(&[
        root.join("audio/a/clip1.wav"),
        root.join("audio/a/clip1.wav"),
    ]);
    assert!(format!("{:#}", dup.unwrap_err()).contains("would both be written as clip1.wav"));
    assert!(list_inputs(&[root.join("missing.lst")]).is_err());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn device_auto_falls_back_to_the_cpu_without_a_gpu() {
    let gpu = CudaDevice::driver(0).is_ok();
    let auto = Device::parse("auto").unwrap();
    assert_eq!(auto.is_cuda(), gpu, "auto = {auto}, GPU usable: {gpu}");
    // The CLI default is auto and says so in its first line.
    let root = temp_dir("auto");
    let wav = root.join("one.wav");
    write_wav_f32(&wav, &clip(3), 24000).unwrap();
    let model_dir = common::golden("tiny_postln");
    let out = root.join("one.safetensors");
    let o = embed(&[
        "--model",
        model_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        wav.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    if gpu {
        assert!(first.starts_with("embed: device cuda"), "{first}");
    } else {
        assert_eq!(first, "embed: device cpu (f32)");
    }
    assert!(read_safetensors(&out).unwrap().contains_key("one"));
    let _ = std::fs::remove_dir_all(&root);
}
