//! Multilabel tagging metrics, computed as scikit-learn 1.9 computes them.
//!
//! * ROC-AUC (`roc_auc_score`): ranks by score, one ROC point per *distinct* score (tied scores move
//!   FPR and TPR together, i.e. a diagonal segment), area by trapezoids.
//! * Average precision (`average_precision_score`): AP = sum_n (R_n - R_{n-1}) P_n over the distinct
//!   thresholds in decreasing order (a step function, no interpolation).
//! * F1 at a threshold (`f1_score`), predictions `score > threshold` (strict, as torchmetrics'
//!   multilabel binarisation does); a label with no true and no predicted positives gets F1 = 0
//!   (sklearn's `zero_division` default).
//! * Macro = unweighted mean over labels.
//!
//! Labels with a single class present. ROC-AUC needs both classes, AP needs at least one positive.
//! scikit-learn 1.9 returns NaN for ROC-AUC of such a label (with a warning), so its macro ROC-AUC is NaN,
//! and it returns AP = 0 for a label without positives (AP = 1 when all are positive, which is defined).
//! torchmetrics (used by MARBLE) scores such a label differently again (not emulated). `Undefined`
//! chooses: `Sklearn` reproduces sklearn exactly; `Skip` (the default for probing) leaves undefined labels
//! out of the macro mean and lists them in `MacroScore::undefined`; `Error` refuses.
//!
//! Scores are `[n_samples, n_labels]` row-major, targets the same shape with values exactly 0 or 1.
use anyhow::{bail, ensure, Result};

/// What to do with a label whose metric is undefined (single class present).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Undefined {
    /// Same numbers as scikit-learn 1.9: NaN for ROC-AUC (so macro is NaN), 0 for AP.
    Sklearn,
    /// Exclude the label from the macro mean; error if every label is undefined.
    #[default]
    Skip,
    /// Return an error naming the label.
    Error,
}

/// A macro-averaged metric with its per-label values (NaN where undefined) and the undefined labels.
#[derive(Clone, Debug)]
pub struct MacroScore {
    pub value: f64,
    pub per_label: Vec<f64>,
    pub undefined: Vec<usize>,
}

/// Micro and macro F1 at a threshold, and per-label F1.
#[derive(Clone, Debug)]
pub struct F1Scores {
    pub micro: f64,
    pub macro_: f64,
    pub per_label: Vec<f64>,
}

/// Cumulative (false positives, true positives) at each distinct score, highest score first.
/// The trick: walk the samples sorted by decreasing score and emit a point only where the next score
/// differs, so tied samples form one step.
fn threshold_counts(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = Vec::new();
    let (mut fp, mut tp) = (0f64, 0f64);
    for (k, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            points.push((fp, tp));
        }
    }
    points
}

fn check_binary(scores: &[f64], targets: &[f64]) -> Result<Vec<bool>> {
    ensure!(
        scores.len() == targets.len(),
        "{} scores but {} targets",
        scores.len(),
        targets.len()
    );
    ensure!(!scores.is_empty(), "no samples");
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score of sample {i} is {} (not finite)", scores[i]);
    }
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            0.0 => Ok(false),
            1.0 => Ok(true),
            _ => bail!("target of sample {i} is {t}, expected 0 or 1"),
        })
        .collect()
}

/// Binary ROC-AUC; `None` when only one class is present.
pub fn roc_auc(scores: &[f64], targets: &[f64]) -> Result<Option<f64>> {
    let pos = check_binary(scores, targets)?;
    let pts = threshold_counts(scores, &pos);
    let &(fp_all, tp_all) = pts.last().expect("non-empty");
    if fp_all == 0.0 || tp_all == 0.0 {
        return Ok(None);
    }
    let (mut area, mut prev) = (0.0, (0.0, 0.0));
    for &(fp, tp) in &pts {
        let (x, y) = (fp / fp_all, tp / tp_all);
        area += (x - prev.0) * (y + prev.1) / 2.0;
        prev = (x, y);
    }
    Ok(Some(area))
}

/// Binary average precision; `None` when there is no positive sample.
pub fn average_precision(scores: &[f64], targets: &[f64]) -> Result<Option<f64>> {
    let pos = check_binary(scores, targets)?;
    let pts = threshold_counts(scores, &pos);
    let tp_all = pts.last().expect("non-empty").1;
    if tp_all == 0.0 {
        return Ok(None);
    }
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    for &(fp, tp) in &pts {
        let recall = tp / tp_all;
        ap += (recall - prev_recall) * (tp / (tp + fp));
        prev_recall = recall;
    }
    Ok(Some(ap))
}

/// Column `label` of a row-major [n, n_labels] matrix.
fn column<T: Copy + Into<f64>>(m: &[T], n_labels: usize, label: usize) -> Vec<f64> {
    m.iter()
        .skip(label)
        .step_by(n_labels)
        .map(|&v| v.into())
        .collect()
}

fn check_shape(n_scores: usize, n_targets: usize, n_labels: usize) -> Result<usize> {
    ensure!(n_labels > 0, "n_labels must be positive");
    ensure!(
        n_scores == n_targets,
        "scores have {n_scores} values but targets {n_targets}"
    );
    ensure!(
        n_scores.is_multiple_of(n_labels) && n_scores > 0,
        "{n_scores} values are not a non-empty [n_samples, {n_labels}] matrix"
    );
    Ok(n_scores / n_labels)
}

fn macro_of(
    name: &str,
    per_label: Vec<Option<f64>>,
    sklearn_fill: f64,
    policy: Undefined,
) -> Result<MacroScore> {
    let undefined: Vec<usize> = (0..per_label.len())
        .filter(|&l| per_label[l].is_none())
        .collect();
    let values: Vec<f64> = per_label.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let value = match policy {
        Undefined::Error if !undefined.is_empty() => {
            bail!("{name} is undefined for label(s) {undefined:?}: only one class present")
        }
        Undefined::Sklearn => {
            let filled: Vec<f64> = per_label
                .iter()
                .map(|v| v.unwrap_or(sklearn_fill))
                .collect();
            filled.iter().sum::<f64>() / filled.len() as f64
        }
        _ => {
            let defined: Vec<f64> = per_label.iter().flatten().copied().collect();
            ensure!(!defined.is_empty(), "{name} is undefined for every label");
            defined.iter().sum::<f64>() / defined.len() as f64
        }
    };
    Ok(MacroScore {
        value,
        per_label: values,
        undefined,
    })
}

/// Macro ROC-AUC over the labels of a multilabel problem.
pub fn macro_roc_auc<S, T>(
    scores: &[S],
    targets: &[T],
    n_labels: usize,
    policy: Undefined,
) -> Result<MacroScore>
where
    S: Copy + Into<f64>,
    T: Copy + Into<f64>,
{
    check_shape(scores.len(), targets.len(), n_labels)?;
    let per: Vec<Option<f64>> = (0..n_labels)
        .map(|l| roc_auc(&column(scores, n_labels, l), &column(targets, n_labels, l)))
        .collect::<Result<_>>()?;
    macro_of("ROC-AUC", per, f64::NAN, policy)
}

/// Macro average precision over the labels of a multilabel problem.
pub fn macro_average_precision<S, T>(
    scores: &[S],
    targets: &[T],
    n_labels: usize,
    policy: Undefined,
) -> Result<MacroScore>
where
    S: Copy + Into<f64>,
    T: Copy + Into<f64>,
{
    check_shape(scores.len(), targets.len(), n_labels)?;
    let per: Vec<Option<f64>> = (0..n_labels)
        .map(|l| average_precision(&column(scores, n_labels, l), &column(targets, n_labels, l)))
        .collect::<Result<_>>()?;
    macro_of("average precision", per, 0.0, policy)
}

/// Micro and macro F1 with predictions `score > threshold` (0.5 for probabilities).
pub fn f1_scores<S, T>(
    scores: &[S],
    targets: &[T],
    n_labels: usize,
    threshold: f64,
) -> Result<F1Scores>
where
    S: Copy + Into<f64>,
    T: Copy + Into<f64>,
{
    check_shape(scores.len(), targets.len(), n_labels)?;
    let (mut tp, mut fp, mut fnn) = (
        vec![0u64; n_labels],
        vec![0u64; n_labels],
        vec![0u64; n_labels],
    );
    for (i, (&s, &t)) in scores.iter().zip(targets).enumerate() {
        let (s, t): (f64, f64) = (s.into(), t.into());
        ensure!(
            t == 0.0 || t == 1.0,
            "target {i} (row-major) is {t}, expected 0 or 1"
        );
        ensure!(!s.is_nan(), "score {i} (row-major) is NaN");
        let l = i % n_labels;
        match (s > threshold, t == 1.0) {
            (true, true) => tp[l] += 1,
            (true, false) => fp[l] += 1,
            (false, true) => fnn[l] += 1,
            (false, false) => {}
        }
    }
    let f1 = |tp: u64, fp: u64, fnn: u64| {
        let d = 2 * tp + fp + fnn;
        if d == 0 {
            0.0
        } else {
            2.0 * tp as f64 / d as f64
        }
    };
    let per_label: Vec<f64> = (0..n_labels).map(|l| f1(tp[l], fp[l], fnn[l])).collect();
    Ok(F1Scores {
        micro: f1(tp.iter().sum(), fp.iter().sum(), fnn.iter().sum()),
        macro_: per_label.iter().sum::<f64>() / n_labels as f64,
        per_label,
    })
}
