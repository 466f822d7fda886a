"""Monte-Carlo statistics of fairseq's `compute_mask_indices` as MERT calls it (docs/objective.md section 4),
simulated with numpy's legacy np.random stream (the fairseq <= Dec-2022 code path), written here from the
algorithm (static spans, overlap allowed, padding-aware sizes, rows cut to the batch minimum).

Writes reference/golden/masking.safetensors; for each config NAME:
  NAME.valid      i64 [B]     valid (non-padded) frames per row; the row length T is NAME.marginal.shape[-1]
  NAME.count      f64 [3]     mean, std of the per-row masked count m (equal in all rows), number of trials
  NAME.marginal   f64 [R, T]  P(frame t of row r is masked); for equal-length rows R=1 (averaged over rows)
Run: python reference/make_golden_masking.py
"""
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "golden", "masking.safetensors")


def fairseq_mask(T, valid, mask_prob=0.8, mask_length=5, min_masks=2):
    bsz = len(valid)
    # fairseq draws one U for the unpadded size first, even when padding_mask is given
    _ = int(mask_prob * T / float(mask_length) + np.random.rand())
    idcs = []
    for sz in valid:
        num_mask = max(min_masks, int(mask_prob * sz / float(mask_length) + np.random.rand()))
        lengths = np.full(num_mask, mask_length)
        min_len = min(lengths)
        if sz - min_len <= num_mask:
            min_len = sz - num_mask - 1
        starts = np.random.choice(sz - min_len, num_mask, replace=False)
        idc = np.asarray([starts[j] + o for j in range(len(starts)) for o in range(lengths[j])])
        idcs.append(np.unique(idc[idc < sz]))
    m = min(len(i) for i in idcs)
    mask = np.zeros((bsz, T), dtype=bool)
    for b, idc in enumerate(idcs):
        if len(idc) > m:
            idc = np.random.choice(idc, m, replace=False)
        mask[b, idc] = True
    return mask


CONFIGS = {
    # name: (T, valid rows, trials)
    "b1_t374": (374, [374], 20000),
    "b16_t374": (374, [374] * 16, 4000),
    "ragged_t374": (374, [374, 301, 150, 23], 20000),
    "ragged2_t374": (374, [374, 350, 320], 10000),
    "tiny_t12": (12, [12, 7], 50000),
}


def main():
    np.random.seed(20261122)
    tensors = {}
    for name, (T, valid, trials) in CONFIGS.items():
        counts = np.zeros(trials)
        marg = np.zeros((len(valid), T))
        for n in range(trials):
            mask = fairseq_mask(T, valid)
            counts[n] = mask[0].sum()
            assert (mask.sum(1) == counts[n]).all()
            marg += mask
        marg /= trials
        if len(set(valid)) == 1:
            marg = marg.mean(0, keepdims=True)
        print(f"{name}: mean count {counts.mean():.3f} (std {counts.std():.3f}), "
              f"masked fraction of row 0 {counts.mean() / valid[0]:.4f}")
        tensors[f"{name}.valid"] = np.asarray(valid, dtype=np.int64)
        tensors[f"{name}.count"] = np.asarray([counts.mean(), counts.std(), trials], dtype=np.float64)
        tensors[f"{name}.marginal"] = marg
    save_file(tensors, OUT)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
