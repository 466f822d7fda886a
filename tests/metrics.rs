//! Macro ROC-AUC, macro AP and F1 against scikit-learn 1.9.1 golden values
//! (reference/make_golden_metrics.py -> reference/golden/metrics.safetensors).

mod common;
use culturemert_raw::eval::metrics::{
    average_precision, f1_scores, macro_average_precision, macro_roc_auc, roc_auc, Undefined,
};
use safetensors::{tensor::Dtype, SafeTensors};

const TOL: f64 = 1e-12;
const N_CASES: usize = 6;

struct Case {
    n: usize,
    labels: usize,
    scores: Vec<f64>,
    targets: Vec<f64>,
    roc: Vec<f64>,
    ap: Vec<f64>,
    f1: Vec<f64>,
    summary: Vec<f64>,
}

fn f64_tensor(st: &SafeTensors, name: &str) -> (Vec<f64>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("golden tensor {name}"));
    assert_eq!(t.dtype(), Dtype::F64, "{name}");
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

fn load_cases() -> Vec<Case> {
    let path = common::golden("metrics.safetensors");
    let buf = std::fs::read(path).expect("golden metrics file");
    let st = SafeTensors::deserialize(&buf).unwrap();
    (0..N_CASES)
        .map(|k| {
            let (scores, shape) = f64_tensor(&st, &format!("c{k}_scores"));
            Case {
                n: shape[0],
                labels: shape[1],
                scores,
                targets: f64_tensor(&st, &format!("c{k}_targets")).0,
                roc: f64_tensor(&st, &format!("c{k}_roc")).0,
                ap: f64_tensor(&st, &format!("c{k}_ap")).0,
                f1: f64_tensor(&st, &format!("c{k}_f1")).0,
                summary: f64_tensor(&st, &format!("c{k}_summary")).0,
            }
        })
        .collect()
}

fn column(m: &[f64], labels: usize, l: usize) -> Vec<f64> {
    m.iter().skip(l).step_by(labels).copied().collect()
}

/// |a - b|, with NaN == NaN counting as equal and NaN vs number as infinite error.
fn err(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0.0,
        (false, false) => (a - b).abs(),
        _ => f64::INFINITY,
    }
}

fn single_class(c: &Case, l: usize) -> bool {
    let pos: f64 = column(&c.targets, c.labels, l).iter().sum();
    pos == 0.0 || pos == c.n as f64
}

#[test]
fn binary_roc_auc_and_ap_match_sklearn_per_label() {
    let mut max_err: f64 = 0.0;
    for (k, c) in load_cases().iter().enumerate() {
        for l in 0..c.labels {
            let (s, t) = (
                column(&c.scores, c.labels, l),
                column(&c.targets, c.labels, l),
            );
            let roc = roc_auc(&s, &t).unwrap();
            let ap = average_precision(&s, &t).unwrap();
            let positives: f64 = t.iter().sum();
            // sklearn: NaN ROC for a single class; AP 0 without positives (we return None there).
            let roc_v = roc.unwrap_or(f64::NAN);
            assert_eq!(roc.is_none(), single_class(c, l), "case {k} label {l}");
            assert_eq!(ap.is_none(), positives == 0.0, "case {k} label {l}");
            let ap_v = ap.unwrap_or(0.0);
            let e = err(roc_v, c.roc[l]).max(err(ap_v, c.ap[l]));
            assert!(
                e <= TOL,
                "case {k} label {l}: roc {roc_v} vs {}, ap {ap_v} vs {}",
                c.roc[l],
                c.ap[l]
            );
            max_err = max_err.max(e);
        }
    }
    eprintln!("per-label ROC-AUC/AP max abs error vs sklearn: {max_err:.3e}");
}

#[test]
fn macro_metrics_match_sklearn() {
    let mut max_err: f64 = 0.0;
    for (k, c) in load_cases().iter().enumerate() {
        let roc = macro_roc_auc(&c.scores, &c.targets, c.labels, Undefined::Sklearn).unwrap();
        let ap =
            macro_average_precision(&c.scores, &c.targets, c.labels, Undefined::Sklearn).unwrap();
        let e = err(roc.value, c.summary[0]).max(err(ap.value, c.summary[1]));
        assert!(
            e <= TOL,
            "case {k}: roc {} vs {}, ap {} vs {}",
            roc.value,
            c.summary[0],
            ap.value,
            c.summary[1]
        );
        max_err = max_err.max(e);
        for l in 0..c.labels {
            assert!(err(roc.per_label[l], c.roc[l]) <= TOL, "case {k} label {l}");
        }
    }
    eprintln!("macro ROC-AUC/AP (sklearn policy) max abs error: {max_err:.3e}");
}

#[test]
fn skip_policy_equals_sklearn_on_the_defined_columns() {
    let mut max_err: f64 = 0.0;
    let mut saw_undefined = false;
    for (k, c) in load_cases().iter().enumerate() {
        let expected_undefined: Vec<usize> =
            (0..c.labels).filter(|&l| single_class(c, l)).collect();
        let roc = macro_roc_auc(&c.scores, &c.targets, c.labels, Undefined::Skip).unwrap();
        let ap = macro_average_precision(&c.scores, &c.targets, c.labels, Undefined::Skip).unwrap();
        assert_eq!(roc.undefined, expected_undefined, "case {k}");
        saw_undefined |= !roc.undefined.is_empty();
        // The golden "defined" AP is over columns with both classes; an all-positive column has AP 1
        // and is defined for AP, so compare AP only where no column is all-positive.
        let e_roc = err(roc.value, c.summary[4]);
        assert!(
            e_roc <= TOL,
            "case {k}: skip roc {} vs {}",
            roc.value,
            c.summary[4]
        );
        let ap_defined_cols: Vec<usize> = (0..c.labels)
            .filter(|&l| column(&c.targets, c.labels, l).iter().sum::<f64>() > 0.0)
            .collect();
        let mean_ap: f64 =
            ap_defined_cols.iter().map(|&l| c.ap[l]).sum::<f64>() / ap_defined_cols.len() as f64;
        let e_ap = err(ap.value, mean_ap);
        assert!(e_ap <= TOL, "case {k}: skip ap {} vs {}", ap.value, mean_ap);
        if expected_undefined.is_empty() {
            assert!(err(ap.value, c.summary[5]) <= TOL, "case {k}");
        }
        max_err = max_err.max(e_roc).max(e_ap);
    }
    assert!(
        saw_undefined,
        "golden set must contain a single-class label"
    );
    eprintln!("macro (skip policy) max abs error: {max_err:.3e}");
}

#[test]
fn error_policy_refuses_single_class_labels_only() {
    for (k, c) in load_cases().iter().enumerate() {
        let has_single = (0..c.labels).any(|l| single_class(c, l));
        let r = macro_roc_auc(&c.scores, &c.targets, c.labels, Undefined::Error);
        assert_eq!(r.is_err(), has_single, "case {k}");
        if let Err(e) = r {
            assert!(e.to_string().contains("label"), "{e}");
        }
    }
}

#[test]
fn f1_at_half_matches_sklearn() {
    let mut max_err: f64 = 0.0;
    for (k, c) in load_cases().iter().enumerate() {
        let f = f1_scores(&c.scores, &c.targets, c.labels, 0.5).unwrap();
        let mut e = err(f.micro, c.summary[2]).max(err(f.macro_, c.summary[3]));
        for l in 0..c.labels {
            e = e.max(err(f.per_label[l], c.f1[l]));
        }
        assert!(
            e <= TOL,
            "case {k}: micro {} vs {}, macro {} vs {}",
            f.micro,
            c.summary[2],
            f.macro_,
            c.summary[3]
        );
        max_err = max_err.max(e);
    }
    eprintln!("F1 max abs error vs sklearn: {max_err:.3e}");
}

#[test]
fn f32_scores_and_u8_targets_are_accepted() {
    let c = &load_cases()[0]; // one-decimal scores: f32 rounding keeps their order and ties
    let s32: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
    let t8: Vec<u8> = c.targets.iter().map(|&v| v as u8).collect();
    let roc = macro_roc_auc(&s32, &t8, c.labels, Undefined::Sklearn).unwrap();
    assert!(err(roc.value, c.summary[0]) <= TOL);
}

#[test]
fn bad_inputs_are_errors() {
    assert!(
        roc_auc(&[0.1, 0.2], &[0.0, 0.5]).is_err(),
        "non-binary target"
    );
    assert!(roc_auc(&[0.1, f64::NAN], &[0.0, 1.0]).is_err(), "NaN score");
    assert!(roc_auc(&[0.1], &[0.0, 1.0]).is_err(), "length mismatch");
    assert!(
        macro_roc_auc(&[0.1f64; 6], &[0.0f64; 6], 4, Undefined::Skip).is_err(),
        "not [n, 4]"
    );
    assert!(
        macro_roc_auc(&[0.1f64; 4], &[1.0f64; 4], 2, Undefined::Skip).is_err(),
        "all undefined"
    );
}
