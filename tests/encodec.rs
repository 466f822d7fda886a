//! EnCodec encoder + RVQ against transformers 4.38.2 `EncodecModel` goldens
//! (reference/make_golden_encodec.py): a narrow random-weight model with the real architecture
//! (plus dilated residual blocks), the reflect-padding rule, shapes, and loading errors.
//! The full-size (EncodecConfig() defaults) check is `#[ignore]`d: it needs a model written to /tmp
//! by `make_golden_encodec.py --full DIR`; run it with ENCODEC_FULL_DIR=DIR ... -- --ignored.

mod common;

use culturemert_raw::model::encodec::seanet::causal_reflect_pad;
use culturemert_raw::model::encodec::{EncodecConfig, EncodecTeacher};
use culturemert_raw::model::teacher::Teacher;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn tiny() -> std::path::PathBuf {
    common::golden("encodec_tiny")
}

/// Embedding tolerance: max |rust - torch| / max |torch| over the whole [D, T] tensor. The float32
/// torch model itself differs from its float64 copy by <= 1e-6 on these inputs (script output).
const EMB_REL_TOL: f32 = 1e-4;
/// A code may differ from torch's only where torch's own best-vs-second distance gap is below this
/// fraction of max|emb|^2 (a near tie that float rounding can flip).
const TIE_GAP_REL: f32 = 1e-5;

fn tensor_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn tensor_i64(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// Compares one golden case; returns (emb rel error, mismatched frames, frames).
fn check_case(model: &EncodecTeacher, golden: &SafeTensors, case: &str) -> (f32, usize, usize) {
    let (_, audio) = tensor_f32(golden, &format!("{case}.audio"));
    let (eshape, emb_want) = tensor_f32(golden, &format!("{case}.emb"));
    let (pshape, pre_want) = tensor_f32(golden, &format!("{case}.pre_lstm"));
    let (cshape, codes_want) = tensor_i64(golden, &format!("{case}.codes"));
    let (_, margin) = tensor_f32(golden, &format!("{case}.margin"));
    let frames = audio.len().div_ceil(320);
    assert_eq!(
        eshape,
        [model.config.hidden_size, frames],
        "{case}: golden emb shape"
    );
    assert_eq!(cshape, [8, frames], "{case}: golden codes shape");

    let t0 = Instant::now();
    let (emb, pre) = model.embed_with_pre_lstm(&audio).unwrap();
    let codes = model.quantize(&emb, frames);
    assert_eq!(
        pre.len(),
        pshape.iter().product::<usize>(),
        "{case}: pre-LSTM size"
    );
    let pre_err = max_rel(&pre, &pre_want);
    let emb_err = max_rel(&emb, &emb_want);
    assert!(
        pre_err <= EMB_REL_TOL,
        "{case}: pre-LSTM max rel err {pre_err:e}"
    );
    assert!(
        emb_err <= EMB_REL_TOL,
        "{case}: embedding max rel err {emb_err:e}"
    );

    // Codes from Rust's own embedding. Once a codebook differs in a frame its residual differs, so
    // later codebooks of that frame are not compared.
    let scale = emb_want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tie = TIE_GAP_REL * scale * scale;
    let mut mismatched = 0;
    for t in 0..frames {
        for q in 0..8 {
            let (got, want) = (codes[q * frames + t] as i64, codes_want[q * frames + t]);
            if got != want {
                let gap = margin[q * frames + t];
                assert!(
                    gap < tie,
                    "{case}: frame {t} codebook {q}: code {got} != torch {want} with distance gap \
                     {gap:e} (not a near tie, limit {tie:e})"
                );
                mismatched += 1;
                break;
            }
        }
    }
    eprintln!(
        "{case}: N={} T={frames} pre-LSTM rel {pre_err:.2e} emb rel {emb_err:.2e}, frames with a \
         flipped near-tie code {mismatched}/{frames} ({:.2?})",
        audio.len(),
        t0.elapsed()
    );
    (emb_err, mismatched, frames)
}

fn golden_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("golden.safetensors")).unwrap()
}

#[test]
fn tiny_model_matches_transformers() {
    let model = EncodecTeacher::load(tiny().as_path()).unwrap();
    assert_eq!(model.codebooks(), 8);
    assert_eq!(model.codebook_size(), 1024);
    assert_eq!(model.hop(), 320);
    assert_eq!(model.sample_rate(), 24000);
    let bytes = golden_bytes(tiny().as_path());
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    for case in ["chord", "short5", "short700"] {
        let (_, mismatched, frames) = check_case(&model, &golden, case);
        // A flip needs a gap below rounding; the goldens' smallest gap is reported by the script.
        assert!(
            mismatched * 100 <= frames,
            "{case}: {mismatched} of {frames} frames differ"
        );
    }
    // Teacher::encode is embed + quantize.
    let (_, audio) = tensor_f32(&golden, "chord.audio");
    let codes = model.encode(&audio).unwrap();
    let emb = model.embed(&audio).unwrap();
    assert_eq!(codes, model.quantize(&emb, audio.len().div_ceil(320)));
}

#[test]
fn causal_reflect_padding_rule() {
    // long enough: k_eff 4, stride 2, L 5 -> left 2, right ceil(5/2)*2-5 = 1, plain reflection
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let (p, n) = causal_reflect_pad(&x, 1, 5, 4, 2);
    assert_eq!(n, 8);
    assert_eq!(p, [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0]);
    // L 6: right 0
    let x6 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert_eq!(
        causal_reflect_pad(&x6, 1, 6, 4, 2).0,
        [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    // short: k_eff 8, stride 4, L 3 <= max pad 4: zero-extend to [a b c 0 0], reflect (4, 1) ->
    // [0 0 c b | a b c 0 0 | 0], drop the 2 extension values at the end -> [0 0 c b a b c 0]
    let (p, n) = causal_reflect_pad(&[1.0, 2.0, 3.0], 1, 3, 8, 4);
    assert_eq!(n, 8);
    assert_eq!(p, [0.0, 0.0, 3.0, 2.0, 1.0, 2.0, 3.0, 0.0]);
    // one sample, k 7 stride 1: extend to 7 values [a 0 0 0 0 0 0], reflect left 6 -> zeros then a
    let (p, n) = causal_reflect_pad(&[5.0], 1, 1, 7, 1);
    assert_eq!(n, 7);
    assert_eq!(p, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
    // two channels are padded independently
    let (p, n) = causal_reflect_pad(&[1.0, 2.0, 3.0, 7.0, 8.0, 9.0], 2, 3, 3, 1);
    assert_eq!(n, 5);
    assert_eq!(p, [3.0, 2.0, 1.0, 2.0, 3.0, 9.0, 8.0, 7.0, 8.0, 9.0]);
}

#[test]
fn frames_and_code_range() {
    let model = EncodecTeacher::load(tiny().as_path()).unwrap();
    for n in [1usize, 319, 320, 321, 1000] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3)
            .collect();
        let codes = model.encode(&x).unwrap();
        let t = n.div_ceil(320);
        assert_eq!(model.frames(n), t);
        assert_eq!(codes.len(), 8 * t, "N={n}");
        assert!(codes.iter().all(|&c| c < 1024));
    }
    assert!(model.encode(&[]).unwrap_err().to_string().contains("empty"));
    let err = model.encode(&[0.1, f32::NAN]).unwrap_err().to_string();
    assert!(err.contains("sample 1"), "{err}");
}

#[test]
fn config_quantizer_counts() {
    let d = EncodecConfig::default();
    assert_eq!((d.hop(), d.frame_rate(), d.num_quantizers()), (320, 75, 32));
    assert_eq!(d.quantizers_for_bandwidth(6.0), 8);
    assert_eq!(d.quantizers_for_bandwidth(1.5), 2);
    assert_eq!(d.quantizers_for_bandwidth(24.0), 32);
    for (json, needle) in [
        (r#"{"use_causal_conv": false}"#, "non-causal"),
        (r#"{"norm_type": "time_group_norm"}"#, "norm_type"),
        (r#"{"pad_mode": "constant"}"#, "pad_mode"),
        (r#"{"normalize": true}"#, "normalize"),
        (r#"{"chunk_length_s": 1.0, "overlap": 0.01}"#, "chunked"),
        (r#"{"audio_channels": 2}"#, "mono"),
        (r#"{"codebook_dim": 64}"#, "projection"),
        (r#"{"codebook_size": 1000}"#, "power of two"),
        (r#"{"model_type": "hubert"}"#, "model_type"),
    ] {
        let err = format!("{:#}", EncodecConfig::from_json(json).unwrap_err());
        assert!(err.contains(needle), "{json}: {err}");
    }
}

/// A scratch copy of the tiny model dir whose tensors pass through `edit` and config through `cfg`.
fn edited_copy(
    tag: &str,
    edit: impl Fn(&str, &[usize]) -> Option<(String, Vec<usize>)>,
    cfg: impl Fn(String) -> String,
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("encodec_test_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(tiny().as_path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((new_name, shape)) = edit(&name, view.shape()) {
            let n: usize = shape.iter().product();
            let mut data = view.data().to_vec();
            data.resize(n * 4, 0);
            kept.push((new_name, view.dtype(), shape, data));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(tiny().as_path().join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg(config)).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    let err = match EncodecTeacher::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    };
    std::fs::remove_dir_all(dir).ok();
    err
}

#[test]
fn parametrizations_spelling_gives_same_codes() {
    let dir = edited_copy(
        "param",
        |n, s| {
            let n = n
                .replace(".weight_g", ".parametrizations.weight.original0")
                .replace(".weight_v", ".parametrizations.weight.original1");
            Some((n, s.to_vec()))
        },
        |c| c,
    );
    let a = EncodecTeacher::load(tiny().as_path()).unwrap();
    let b = EncodecTeacher::load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let x: Vec<f32> = (0..2000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    assert_eq!(a.embed(&x).unwrap(), b.embed(&x).unwrap());
    assert_eq!(a.encode(&x).unwrap(), b.encode(&x).unwrap());
    // the weights fingerprint differs (different file), the rest of params is the same
    assert!(a.params().starts_with("encodec-v1 bandwidth=6 n_q=8"));
}

#[test]
fn load_errors_name_the_problem() {
    let missing = "encoder.layers.6.block.1.conv.weight_v";
    let dir = edited_copy(
        "missing",
        |n, s| (n != missing).then(|| (n.into(), s.to_vec())),
        |c| c,
    );
    let err = load_err(&dir);
    assert!(err.contains(missing) && err.contains("missing"), "{err}");

    let dir = edited_copy(
        "noconv",
        |n, s| (!n.starts_with("encoder.layers.4.conv.")).then(|| (n.into(), s.to_vec())),
        |c| c,
    );
    let err = load_err(&dir);
    assert!(err.contains("encoder.layers.4.conv.weight_g"), "{err}");

    let shaped = "encoder.layers.17.lstm.weight_hh_l1";
    let dir = edited_copy(
        "shape",
        |n, s| {
            let s = if n == shaped {
                vec![s[0], s[1] + 1]
            } else {
                s.to_vec()
            };
            Some((n.into(), s))
        },
        |c| c,
    );
    let err = load_err(&dir);
    assert!(err.contains(shaped) && err.contains("shape"), "{err}");

    let cb = "quantizer.layers.7.codebook.embed";
    let dir = edited_copy(
        "cb",
        |n, s| (n != cb).then(|| (n.into(), s.to_vec())),
        |c| c,
    );
    let err = load_err(&dir);
    assert!(err.contains(cb), "{err}");

    let dir = edited_copy(
        "causal",
        |n, s| Some((n.into(), s.to_vec())),
        |c| c.replace("\"use_causal_conv\": true", "\"use_causal_conv\": false"),
    );
    let err = load_err(&dir);
    assert!(err.contains("non-causal"), "{err}");

    let dir = edited_copy("bw", |n, s| Some((n.into(), s.to_vec())), |c| c);
    let err = format!(
        "{:#}",
        EncodecTeacher::load_with_bandwidth(&dir, 12.0)
            .err()
            .unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
    assert!(err.contains("target_bandwidths"), "{err}");

    let err = format!(
        "{:#}",
        EncodecTeacher::load(Path::new("/nonexistent/encodec"))
            .err()
            .unwrap()
    );
    assert!(err.contains("config.json"), "{err}");
}

/// Full-size EncodecConfig() model written by `make_golden_encodec.py --full DIR` (not committed).
#[test]
#[ignore]
fn full_size_matches_transformers() {
    let dir = PathBuf::from(std::env::var("ENCODEC_FULL_DIR").expect("set ENCODEC_FULL_DIR"));
    let t0 = Instant::now();
    let model = EncodecTeacher::load(&dir).unwrap();
    eprintln!("load {:.2?}", t0.elapsed());
    let bytes = golden_bytes(&dir);
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let (emb_err, mismatched, frames) = check_case(&model, &golden, "long");
    eprintln!("full size: emb rel {emb_err:.2e}, {mismatched}/{frames} frames differ");
    // timing of a 30 s track
    let x: Vec<f32> = (0..30 * 24000u64)
        .map(|i| {
            ((i as f32) * 0.0731).sin() * 0.3 + ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.05
        })
        .collect();
    for _ in 0..2 {
        let (t0, c0) = (Instant::now(), process_cpu_seconds());
        let codes = model.encode(&x).unwrap();
        eprintln!(
            "30 s track: {} codes in {:.2?} wall, {:.2} s CPU (all threads)",
            codes.len(),
            t0.elapsed(),
            process_cpu_seconds() - c0
        );
        assert_eq!(codes.len(), 8 * 2250);
    }
}

/// utime + stime of this process from /proc/self/stat (Linux; 0 elsewhere), in seconds.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}
