"""Time one MERT pre-training step in PyTorch with the MERT-v1-95M config (random weights, CPU):
the counterpart of `culturemert-raw bench --train-step`.

    /work/ref-venv/bin/python reference/bench_train.py [--threads 2] [--seconds 5] [--runs 5]

One step = HubertModel forward in train() mode (dropout 0.1, attention_dropout 0.1; LayerDrop set to 0
so the work is fixed, as on the Rust side) with MERT masking (p 0.8, spans of 5, at least 2) + the MERT
loss (8 x 1024 codebook NCE with cosine / 0.1, CQT MSE on 336 bins, feature penalty with GradMultiply
0.1; make_golden_loss.mert_objective) + backward + clip_grad_norm_(1.0) + torch.optim.AdamW.
Prints a human line and one machine-readable line starting with "RESULT " (peak RSS from getrusage).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import HubertModel
from transformers.models.hubert.modeling_hubert import _compute_mask_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hubert import mert_hubert_config, time_runs  # noqa: E402
from make_golden_loss import Heads, mert_objective  # noqa: E402

CODEBOOKS, CODEBOOK_SIZE, FINAL_DIM, CQT_BINS = 8, 1024, 64, 336  # the engine's default heads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # _compute_mask_indices draws from numpy's global RNG
    cfg = mert_hubert_config(layerdrop=0.0, apply_spec_augment=True, mask_feature_prob=0.0)
    model = HubertModel(cfg).train()
    heads = Heads(cfg.hidden_size, k=CODEBOOKS, c=CODEBOOK_SIZE, d=FINAL_DIM, bins=CQT_BINS)
    heads.randomise(torch.Generator().manual_seed(args.seed))
    n = int(round(args.seconds * 24000))
    b = args.batch
    t = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    audio = 0.1 * torch.randn(b, n)
    mask = torch.from_numpy(_compute_mask_indices((b, t), 0.8, 5, min_masks=2)).bool()
    rows = torch.randint(0, CODEBOOK_SIZE, (b, CODEBOOKS, t), dtype=torch.int32)
    cqt = torch.rand(b, t, CQT_BINS)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        total, _ = mert_objective(model, heads, audio, mask, rows, cqt)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        last["loss"] = total.item()

    times = time_runs(step, args.runs, args.warmup)
    med, best = statistics.median(times), min(times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    audio_s = args.seconds * b
    print(f"train_step: batch {b} x {n} samples ({args.seconds} s @ 24 kHz), {args.threads} threads: "
          f"median {med:.3f} s, min {best:.3f} s over {args.runs} runs; {audio_s / med:.2f} audio-s/s; "
          f"peak RSS {rss_mb:.0f} MB; masked {int(mask.sum())} of {b * t} frames; last loss {last['loss']:.3f}")
    result = dict(
        mode="train_step", threads=args.threads, batch=b, samples=n, runs=args.runs,
        median_s=round(med, 4), min_s=round(best, 4), times_s=[round(x, 4) for x in times],
        audio_s_per_s=round(audio_s / med, 3), peak_rss_mb=round(rss_mb), torch=torch.__version__,
        cpu_count=os.cpu_count(), loadavg=os.getloadavg()[0],
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
