//! Task arithmetic (`merge`): exactness against a direct computation, closed forms, the written
//! directory, and every refusal. Models are small random safetensors files made here.
use clap::Parser;
use culturemert_raw::cli::merge as cli;
use culturemert_raw::merge::{merge_dirs, resolve_lambdas};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// (name, dtype, shape) of the test models; "big" spans several merge chunks (65536 elements).
const LAYOUT: &[(&str, Dtype, &[usize])] = &[
    (
        "encoder.layers.0.attention.k_proj.weight",
        Dtype::F32,
        &[7, 5],
    ),
    (
        "encoder.pos_conv_embed.conv.weight_g",
        Dtype::F32,
        &[1, 1, 3],
    ),
    (
        "encoder.pos_conv_embed.conv.weight_v",
        Dtype::F32,
        &[5, 2, 3],
    ),
    ("big", Dtype::F32, &[70001]),
    ("half_weight", Dtype::F16, &[13]),
    ("bhalf_weight", Dtype::BF16, &[3, 11]),
    ("double_weight", Dtype::F64, &[5]),
    ("position_ids", Dtype::I64, &[4]),
];

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        // xorshift64*, top 53 bits -> [-1, 1)
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        r as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn encode(dtype: Dtype, vals: &[f64]) -> Vec<u8> {
    vals.iter()
        .flat_map(|&v| match dtype {
            Dtype::F32 => (v as f32).to_le_bytes().to_vec(),
            Dtype::F64 => v.to_le_bytes().to_vec(),
            Dtype::F16 => f16::from_f64(v).to_bits().to_le_bytes().to_vec(),
            Dtype::BF16 => bf16::from_f64(v).to_bits().to_le_bytes().to_vec(),
            Dtype::I64 => (v as i64).to_le_bytes().to_vec(),
            _ => unreachable!(),
        })
        .collect()
}

fn decode(dtype: Dtype, b: &[u8]) -> Vec<f64> {
    let w = dtype.bitsize() / 8;
    b.chunks_exact(w)
        .map(|c| match dtype {
            Dtype::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            Dtype::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            Dtype::F16 => f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
            Dtype::BF16 => bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
            Dtype::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            _ => unreachable!(),
        })
        .collect()
}

fn unique_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = std::env::temp_dir().join(format!("cmr-merge-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Tensors of one model (as stored, i.e. already rounded to their dtype), by name.
type Tensors = HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn random_tensors(seed: u64) -> Tensors {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    LAYOUT
        .iter()
        .map(|&(name, dtype, shape)| {
            let n: usize = shape.iter().product();
            let vals: Vec<f64> = if dtype == Dtype::I64 {
                (0..n).map(|i| i as f64).collect() // identical in every model
            } else {
                (0..n).map(|_| 3.0 * rng.uniform()).collect()
            };
            (
                name.to_string(),
                (dtype, shape.to_vec(), encode(dtype, &vals)),
            )
        })
        .collect()
}

fn config(hidden: u64, name: &str) -> serde_json::Value {
    serde_json::json!({"_name_or_path": name, "hidden_size": hidden, "model_type": "mert_model",
                       "conv_dim": [512, 512]})
}

fn write_model(dir: &Path, tensors: &Tensors, cfg: &serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
}

/// A base and `n` fine-tuned models (different names in config: `_name_or_path` is ignored).
fn make_models(root: &Path, n: usize) -> (PathBuf, Vec<PathBuf>, Tensors, Vec<Tensors>) {
    let base = root.join("base");
    let bt = random_tensors(100);
    write_model(&base, &bt, &config(768, "m-a-p/MERT-v1-95M"));
    std::fs::write(
        base.join("preprocessor_config.json"),
        "{\"sampling_rate\": 24000}",
    )
    .unwrap();
    let mut dirs = Vec::new();
    let mut ts = Vec::new();
    for i in 0..n {
        let d = root.join(format!("ft{i}"));
        let t = random_tensors(200 + i as u64);
        write_model(&d, &t, &config(768, &format!("ft{i}")));
        dirs.push(d);
        ts.push(t);
    }
    (base, dirs, bt, ts)
}

fn read_out(dir: &Path) -> (Tensors, HashMap<String, String>) {
    let buf = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&buf).expect("output loads with the safetensors crate");
    let (_, meta) = SafeTensors::read_metadata(&buf).unwrap();
    let t = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    (t, meta.metadata().clone().unwrap_or_default())
}

/// Spacing of representable numbers of `dtype` next to |x| (half an ulp is the rounding bound).
fn ulp(dtype: Dtype, x: f64) -> f64 {
    let (mant_bits, min_exp) = match dtype {
        Dtype::F32 => (23, -126),
        Dtype::F16 => (10, -14),
        Dtype::BF16 => (7, -126),
        Dtype::F64 => (52, -1022),
        _ => unreachable!(),
    };
    let e = if x == 0.0 {
        min_exp
    } else {
        (x.abs().log2().floor() as i32).max(min_exp)
    };
    2f64.powi(e - mant_bits)
}

/// Max error of the merge output in ulps of each tensor's dtype, against the value computed
/// directly in f64 from the stored inputs (acc = b; acc += lambda_i (m_i - b) in model order);
/// integer tensors must equal the base. F64 tensors (f64 arithmetic, no wider type) must match
/// the same-order f64 computation bit for bit; narrower dtypes are rounded once from it.
fn check_against_direct(
    out: &Tensors,
    base: &Tensors,
    models: &[&Tensors],
    lambdas: &[f64],
) -> f64 {
    assert_eq!(out.len(), base.len());
    let mut worst: f64 = 0.0;
    for (name, (dtype, shape, bytes)) in base {
        let (od, os, ob) = &out[name];
        assert_eq!((od, os), (dtype, shape), "{name}");
        if *dtype == Dtype::I64 {
            assert_eq!(ob, bytes, "{name}");
            continue;
        }
        let b = decode(*dtype, bytes);
        let ms: Vec<Vec<f64>> = models.iter().map(|m| decode(*dtype, &m[name].2)).collect();
        let got = decode(*dtype, ob);
        for k in 0..b.len() {
            let mut exact = b[k];
            for (m, l) in ms.iter().zip(lambdas) {
                exact += l * (m[k] - b[k]);
            }
            if *dtype == Dtype::F64 {
                assert_eq!(got[k].to_bits(), exact.to_bits(), "{name}[{k}]");
            }
            worst = worst.max((got[k] - exact).abs() / ulp(*dtype, exact));
        }
    }
    worst
}

#[test]
fn shared_and_per_model_lambdas_match_direct_computation() {
    let root = unique_dir("exact");
    let (base, dirs, bt, ts) = make_models(&root, 3);
    let models: Vec<&Tensors> = ts.iter().collect();
    let cases: Vec<(&str, Vec<f64>)> = vec![
        (
            "shared",
            resolve_lambdas(3, Some(0.2), None, false).unwrap(),
        ),
        (
            "per_model",
            resolve_lambdas(3, None, Some(&[0.3, -0.7, 1.25]), false).unwrap(),
        ),
        ("average", resolve_lambdas(3, None, None, true).unwrap()),
        (
            "negation",
            resolve_lambdas(3, Some(-1.0), None, false).unwrap(),
        ),
    ];
    for (tag, lambdas) in cases {
        let out = root.join(tag);
        let s = merge_dirs(&base, &dirs, &lambdas, &out).unwrap();
        assert_eq!(s.tensors, LAYOUT.len());
        assert_eq!(s.copied_integer_tensors, 1);
        let (got, meta) = read_out(&out);
        let worst = check_against_direct(&got, &bt, &models, &lambdas);
        eprintln!("{tag} {lambdas:?}: max error {worst:.9} ulp of the stored dtype");
        // Rounded once to the nearest value of the stored dtype: at most half an ulp (+ f64 noise).
        assert!(worst <= 0.5 + 1e-6, "{tag}: {worst} ulp");
        assert_eq!(meta["format"], "pt");
        assert!(meta["culturemert_merge"].contains("lambdas"));
    }
    assert_eq!(
        resolve_lambdas(3, None, None, true).unwrap(),
        vec![1.0 / 3.0; 3]
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn closed_forms_hold_bit_for_bit() {
    let root = unique_dir("closed");
    let (base, dirs, bt, ts) = make_models(&root, 2);
    // lambda 1 on one model gives that model; lambda 0 gives the base.
    merge_dirs(&base, &dirs[..1], &[1.0], &root.join("one")).unwrap();
    merge_dirs(&base, &dirs[..1], &[0.0], &root.join("zero")).unwrap();
    let (one, _) = read_out(&root.join("one"));
    let (zero, _) = read_out(&root.join("zero"));
    for (name, t) in &ts[0] {
        assert_eq!(one[name], *t, "{name}: lambda 1");
        assert_eq!(zero[name], bt[name], "{name}: lambda 0");
    }
    // Averaging a model with itself gives it back; lambda -1 is 2 base - model (task negation).
    merge_dirs(
        &base,
        &[dirs[1].clone(), dirs[1].clone()],
        &[0.5, 0.5],
        &root.join("self"),
    )
    .unwrap();
    merge_dirs(&base, &dirs[1..], &[-1.0], &root.join("neg")).unwrap();
    let (avg, _) = read_out(&root.join("self"));
    let (neg, _) = read_out(&root.join("neg"));
    for (name, (d, _, bytes)) in &ts[1] {
        if *d == Dtype::I64 {
            assert_eq!(avg[name].2, *bytes, "{name}");
            continue;
        }
        // Exact in f64 only when the inputs have fewer mantissa bits than f64 (not for F64 tensors).
        if *d == Dtype::F64 {
            continue;
        }
        assert_eq!(avg[name].2, *bytes, "{name}: average with itself");
        let (b, m) = (decode(*d, &bt[name].2), decode(*d, bytes));
        let want: Vec<f64> = b.iter().zip(&m).map(|(b, m)| 2.0 * b - m).collect();
        assert_eq!(neg[name].2, encode(*d, &want), "{name}: negation");
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn output_directory_is_hf_compatible() {
    let root = unique_dir("dir");
    let (base, dirs, _, _) = make_models(&root, 1);
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap(); // an existing empty directory is accepted
    merge_dirs(&base, &dirs, &[0.5], &out).unwrap();
    let files = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        files(&out),
        [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json"
        ]
    );
    for f in ["config.json", "preprocessor_config.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(base.join(f)).unwrap(),
            "{f}"
        );
    }
    // No temporary files left next to the output.
    assert!(
        files(&root).iter().all(|f| !f.starts_with('.')),
        "{:?}",
        files(&root)
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn cli_parses_negative_lambdas_and_runs() {
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: cli::Args,
    }
    let root = unique_dir("cli");
    let (base, dirs, bt, ts) = make_models(&root, 2);
    let (b, m0, m1) = (
        base.to_str().unwrap(),
        dirs[0].to_str().unwrap(),
        dirs[1].to_str().unwrap(),
    );
    let out = root.join("cli_out");
    let t = T::try_parse_from([
        "t",
        "--base",
        b,
        "--model",
        m0,
        "--model",
        m1,
        "--lambdas",
        "-0.25,0.5",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(t.a.lambdas.as_deref(), Some(&[-0.25, 0.5][..]));
    cli::run(t.a).unwrap();
    let (got, _) = read_out(&out);
    let worst = check_against_direct(&got, &bt, &[&ts[0], &ts[1]], &[-0.25, 0.5]);
    assert!(worst <= 0.5 + 1e-6);

    let t = T::try_parse_from([
        "t", "--base", b, "--model", m0, "--lambda", "-0.5", "--out", "x",
    ])
    .unwrap();
    assert_eq!(t.a.lambda, Some(-0.5));
    // --lambda together with --average is refused before anything is read.
    let t = T::try_parse_from([
        "t",
        "--base",
        b,
        "--model",
        m0,
        "--lambda",
        "0.5",
        "--average",
        "--out",
        "x",
    ])
    .unwrap();
    assert!(cli::run(t.a)
        .unwrap_err()
        .to_string()
        .contains("exactly one"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn lambda_choices_are_validated() {
    assert!(resolve_lambdas(2, None, Some(&[0.1, 0.2, 0.3]), false)
        .unwrap_err()
        .to_string()
        .contains("3 values but 2"));
    assert!(
        resolve_lambdas(2, None, None, false).is_err(),
        "nothing given"
    );
    assert!(
        resolve_lambdas(2, Some(0.1), Some(&[0.1, 0.2]), false).is_err(),
        "two given"
    );
    assert!(
        resolve_lambdas(2, Some(f64::NAN), None, false).is_err(),
        "NaN"
    );
    assert!(
        resolve_lambdas(0, Some(0.1), None, false).is_err(),
        "no model"
    );
    assert_eq!(
        resolve_lambdas(2, Some(-0.3), None, false).unwrap(),
        vec![-0.3, -0.3]
    );
}

/// Run a merge of `base` with one model that `spoil` altered; it must fail with a message
/// containing `needle` and leave no output and no temporary files.
fn expect_refusal(tag: &str, spoil: impl Fn(&mut Tensors, &mut serde_json::Value), needle: &str) {
    let root = unique_dir(tag);
    let (base, _, _, _) = make_models(&root, 0);
    let mut t = random_tensors(7);
    let mut cfg = config(768, "x");
    spoil(&mut t, &mut cfg);
    let bad = root.join("bad");
    write_model(&bad, &t, &cfg);
    let out = root.join("out");
    let err = format!("{:#}", merge_dirs(&base, &[bad], &[0.2], &out).unwrap_err());
    assert!(
        err.contains(needle),
        "{tag}: '{err}' should name '{needle}'"
    );
    assert!(!out.exists(), "{tag}: output left behind");
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{tag}: temporary files left: {leftovers:?}"
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn mismatches_are_refused_with_the_offending_name() {
    expect_refusal(
        "missing",
        |t, _| {
            t.remove("half_weight");
        },
        "half_weight",
    );
    expect_refusal(
        "extra",
        |t, _| {
            t.insert("lm_head.weight".into(), (Dtype::F32, vec![2], vec![0; 8]));
        },
        "lm_head.weight",
    );
    expect_refusal(
        "shape",
        |t, _| {
            t.insert(
                "encoder.pos_conv_embed.conv.weight_g".into(),
                (Dtype::F32, vec![3], vec![0; 12]),
            );
        },
        "encoder.pos_conv_embed.conv.weight_g",
    );
    expect_refusal(
        "dtype",
        |t, _| {
            t.insert("double_weight".into(), (Dtype::F32, vec![5], vec![0; 20]));
        },
        "double_weight",
    );
    expect_refusal(
        "config",
        |_, c| c["hidden_size"] = 1024.into(),
        "hidden_size",
    );
    expect_refusal(
        "config_missing_key",
        |_, c| {
            c.as_object_mut().unwrap().remove("conv_dim");
        },
        "conv_dim",
    );
    expect_refusal(
        "integer",
        |t, _| {
            t.insert(
                "position_ids".into(),
                (
                    Dtype::I64,
                    vec![4],
                    encode(Dtype::I64, &[0.0, 1.0, 2.0, 4.0]),
                ),
            );
        },
        "position_ids",
    );
    expect_refusal(
        "unsupported",
        |t, _| {
            t.insert("fp8".into(), (Dtype::F8_E4M3, vec![2], vec![1, 2]));
        },
        "fp8",
    );
}

#[test]
fn unsupported_dtype_in_all_models_is_refused() {
    let root = unique_dir("fp8");
    let mut t = random_tensors(1);
    t.insert("scale".into(), (Dtype::F8_E4M3, vec![2], vec![1, 2]));
    write_model(&root.join("base"), &t, &config(768, "b"));
    write_model(&root.join("m"), &t, &config(768, "m"));
    let err = merge_dirs(
        &root.join("base"),
        &[root.join("m")],
        &[0.5],
        &root.join("out"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("scale"), "{err}");
    assert!(!root.join("out").exists());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn missing_inputs_and_occupied_output_are_refused() {
    let root = unique_dir("missing");
    let (base, dirs, _, _) = make_models(&root, 1);
    let e = merge_dirs(&base, &[root.join("nope")], &[0.2], &root.join("o1")).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = merge_dirs(&root.join("nobase"), &dirs, &[0.2], &root.join("o2")).unwrap_err();
    assert!(e.to_string().contains("nobase"), "{e}");
    std::fs::remove_file(dirs[0].join("model.safetensors")).unwrap();
    let e = merge_dirs(&base, &dirs, &[0.2], &root.join("o3")).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let e = merge_dirs(
        &base,
        std::slice::from_ref(&base),
        &[0.2, 0.3],
        &root.join("o4"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("lambdas"), "{e}");
    // A non-empty output directory is never overwritten.
    let e = merge_dirs(&base, std::slice::from_ref(&base), &[0.2], &dirs[0]).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    // A corrupt weights file is reported with its path.
    std::fs::write(dirs[0].join("model.safetensors"), b"garbage").unwrap();
    let e = merge_dirs(&base, &dirs, &[0.2], &root.join("o5")).unwrap_err();
    assert!(format!("{e:#}").contains("ft0"), "{e:#}");
    for o in ["o1", "o2", "o3", "o4", "o5"] {
        assert!(!root.join(o).exists(), "{o} left behind");
    }
    std::fs::remove_dir_all(root).unwrap();
}
