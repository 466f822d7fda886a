"""Golden values for src/eval/metrics.rs and src/eval/similarity.rs, from scikit-learn and scipy.

Run with the reference venv:  python reference/make_golden_metrics.py
Writes reference/golden/metrics.safetensors and reference/golden/similarity.safetensors.

metrics.safetensors, per case k (all float64):
  c{k}_scores [n, L], c{k}_targets [n, L] (0/1)
  c{k}_roc [L]  sklearn roc_auc_score per label (NaN where only one class is present)
  c{k}_ap [L]   sklearn average_precision_score per label (0 for a label without positives)
  c{k}_f1 [L]   sklearn f1_score(average=None) of predictions scores > 0.5
  c{k}_summary [6] = roc macro, ap macro, f1 micro, f1 macro (all sklearn on the full matrix),
                     roc macro and ap macro on the columns where ROC-AUC is defined (both classes present)
similarity.safetensors:
  counts [D, C, K] int32 codeword counts of D datasets (zeros included)
  jsd_e [D, D], jsd_2 [D, D]  mean over codebooks of scipy jensenshannon(p, q, base)**2 (divergence)
  cosine [D, D]               mean over codebooks of scipy.spatial.distance.cosine(p, q)
  pair01_jsd_e [C], pair01_cosine [C]  per-codebook values for datasets 0 and 1
"""

import os
import warnings

import numpy as np
from safetensors.numpy import save_file
from scipy.spatial.distance import cosine, jensenshannon
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
rng = np.random.default_rng(20251122)


def imbalanced_targets(n, n_labels, both_classes=True):
    prevalence = rng.uniform(0.05, 0.6, size=n_labels)
    y = (rng.random((n, n_labels)) < prevalence).astype(np.float64)
    if both_classes:  # force at least one positive and one negative per label
        for l in range(n_labels):
            y[rng.integers(n), l] = 1.0
            idx = np.flatnonzero(y[:, l] == 1.0)
            if len(idx) == n:
                y[idx[0], l] = 0.0
    return y


def informative_scores(y, noise, decimals=None):
    s = 1.0 / (1.0 + np.exp(-(2.0 * y - 1.0 + noise * rng.standard_normal(y.shape))))
    return np.round(s, decimals) if decimals is not None else s


def cases():
    # 0: heavy ties (1 decimal), imbalanced, ragged shape
    y = imbalanced_targets(37, 7)
    yield informative_scores(y, 1.5, decimals=1), y
    # 1: continuous scores, no ties
    y = imbalanced_targets(53, 5)
    yield informative_scores(y, 1.0), y
    # 2: perfect (labels 0-2) and inverted (labels 3-4) rankings, with ties inside each class
    y = imbalanced_targets(29, 5)
    s = np.where(y == 1.0, 0.9, 0.2) + np.round(rng.random(y.shape) * 0.05, 2)
    s[:, 3:] = 1.0 - s[:, 3:]
    yield s, y
    # 3: single-class labels (label 1 all negative, label 4 all positive), scores exactly 0.5 present
    y = imbalanced_targets(23, 6)
    y[:, 1] = 0.0
    y[:, 4] = 1.0
    s = informative_scores(y, 2.0, decimals=1)
    s[::3, 2] = 0.5
    yield s, y
    # 4: larger, 2-decimal ties, rare tags
    y = imbalanced_targets(211, 13)
    yield informative_scores(y, 2.5, decimals=2), y
    # 5: all scores equal for one label (a single threshold), random noise scores elsewhere
    y = imbalanced_targets(31, 4)
    s = np.round(rng.random(y.shape), 1)
    s[:, 0] = 0.3
    yield s, y


def metric_golden():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-class warnings are part of case 3
        for k, (s, y) in enumerate(cases()):
            L = y.shape[1]
            roc = np.array([roc_auc_score(y[:, l], s[:, l]) for l in range(L)])
            ap = np.array([average_precision_score(y[:, l], s[:, l]) for l in range(L)])
            pred = (s > 0.5).astype(np.int64)
            f1 = f1_score(y.astype(np.int64), pred, average=None)
            defined = [l for l in range(L) if 0 < y[:, l].sum() < len(y)]
            summary = np.array(
                [
                    roc_auc_score(y, s, average="macro"),
                    average_precision_score(y, s, average="macro"),
                    f1_score(y.astype(np.int64), pred, average="micro"),
                    f1_score(y.astype(np.int64), pred, average="macro"),
                    roc_auc_score(y[:, defined], s[:, defined], average="macro"),
                    average_precision_score(y[:, defined], s[:, defined], average="macro"),
                ]
            )
            out[f"c{k}_scores"] = s
            out[f"c{k}_targets"] = y
            out[f"c{k}_roc"] = roc
            out[f"c{k}_ap"] = ap
            out[f"c{k}_f1"] = np.asarray(f1, dtype=np.float64)
            out[f"c{k}_summary"] = summary
            print(f"case {k}: shape {s.shape}, summary {summary}")
    save_file(out, os.path.join(OUT, "metrics.safetensors"))


def similarity_golden():
    D, C, K = 4, 8, 1024
    counts = np.zeros((D, C, K), dtype=np.int32)
    for d in range(D):
        for c in range(C):
            # Zipf-like codeword usage with a dataset-specific permutation; about a third unused.
            weights = 1.0 / np.arange(1, K + 1) ** rng.uniform(0.6, 1.4)
            perm = rng.permutation(K) if d != 2 else np.arange(K)
            p = weights[perm] / weights.sum()
            draws = rng.multinomial(rng.integers(2000, 6000), p)
            draws[rng.random(K) < 0.3] = 0
            counts[d, c] = draws
    counts[3] = counts[2] * 3  # same distribution as dataset 2, other scale: JSD = cosine = 0
    counts[3, :, 7] += 5  # ... up to a small perturbation
    cf = counts.astype(np.float64)  # scipy would overflow int32 dot products
    jsd_e = np.zeros((D, D))
    jsd_2 = np.zeros((D, D))
    cos = np.zeros((D, D))
    for i in range(D):
        for j in range(D):
            jsd_e[i, j] = np.mean([jensenshannon(cf[i, c], cf[j, c]) ** 2 for c in range(C)])
            jsd_2[i, j] = np.mean([jensenshannon(cf[i, c], cf[j, c], base=2) ** 2 for c in range(C)])
            cos[i, j] = np.mean([cosine(cf[i, c], cf[j, c]) for c in range(C)])
    out = {
        "counts": counts,
        "jsd_e": jsd_e,
        "jsd_2": jsd_2,
        "cosine": cos,
        "pair01_jsd_e": np.array([jensenshannon(cf[0, c], cf[1, c]) ** 2 for c in range(C)]),
        "pair01_cosine": np.array([cosine(cf[0, c], cf[1, c]) for c in range(C)]),
    }
    print("jsd_e\n", jsd_e, "\ncosine\n", cos)
    save_file(out, os.path.join(OUT, "similarity.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    metric_golden()
    similarity_golden()
