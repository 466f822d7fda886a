"""Time one MERT pre-training step in PyTorch with the MERT-v1-95M config (random weights, CPU or GPU):
the counterpart of `culturemert-raw bench --train-step` (CPU) and `culturemert-raw bench-device` (GPU).

    python reference/bench_train.py [--threads 2] [--seconds 5] [--runs 5]
    python reference/bench_train.py --device cuda --precision bf16 --attn sdpa --nce vectorized --batch 32

One step = HubertModel forward in train() mode (dropout 0.1, attention_dropout 0.1; LayerDrop set to 0
so the work is fixed, as on the Rust side) with MERT masking (p 0.8, spans of 5, at least 2) + the MERT
loss (8 x 1024 codebook NCE with cosine / 0.1, CQT MSE on 336 bins, feature penalty with GradMultiply
0.1) + backward + clip_grad_norm_(1.0) + torch.optim.AdamW.

--nce fairseq: fairseq's compute_nce (make_golden_loss.mert_objective: the codewords expanded to
[C, N, D] per codebook, as in the golden files); --nce vectorized: the same loss as one batched product
of the unit rows and unit codewords, [K, N, D] x [K, D, C] -> [K, N, C] cosine logits, and one
cross-entropy (the engine's formulation; equal up to rounding, since a negative equal to the positive is
exactly the target's own codeword).
--device cuda: TF32 off for f32, torch.autocast(bfloat16) for bf16, fused AdamW, times after
torch.cuda.synchronize(), peak memory from torch.cuda.max_memory_allocated().
Prints a human line and one machine-readable line starting with "RESULT ".
"""

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import HubertModel
from transformers.models.hubert.modeling_hubert import _compute_mask_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hubert import (  # noqa: E402
    add_device_args, mert_hubert_config, peak_memory_gib, setup_device, time_runs,
)
from make_golden_loss import LOGIT_TEMP, WEIGHTS, GradMultiply, Heads, mert_objective  # noqa: E402

CODEBOOKS, CODEBOOK_SIZE, FINAL_DIM, CQT_BINS = 8, 1024, 64, 336  # the engine's default heads
NORM_EPS = 1e-8  # torch.cosine_similarity's clamp


def mert_objective_vectorized(model, heads, audio, mask, codes, cqt, feature_grad_mult=0.1,
                              weights=WEIGHTS):
    """mert_objective with the NCE as one batched cosine-logit product. codes [B, K, T] in 0..C."""
    captured = {}

    def hook(_module, _inputs, output):
        feats = GradMultiply.apply(output, feature_grad_mult) if feature_grad_mult != 1.0 else output
        captured["pen"] = feats.float().pow(2).mean()
        return feats

    handle = model.feature_extractor.register_forward_hook(hook)
    try:
        x = model(audio, mask_time_indices=mask, return_dict=True).last_hidden_state
    finally:
        handle.remove()
    t = x.shape[1]
    xm = x[mask]  # [N, H]
    n_m = xm.shape[0]
    k, c = heads.k, heads.c
    proj = heads.final_proj(xm).float().view(n_m, k, -1).transpose(0, 1)  # [K, N, D]
    embs = heads.label_embs_concat.float().view(k, c, -1)  # [K, C, D]
    a = proj / proj.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    b = embs / embs.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    logits = torch.bmm(a, b.transpose(1, 2)) / LOGIT_TEMP  # [K, N, C]
    y = codes[:, :, :t].permute(1, 0, 2)[:, mask].long()  # [K, N]
    ce = F.cross_entropy(logits.reshape(k * n_m, c), y.reshape(-1), reduction="sum")
    cqt_pred = heads.encoder_cqt_model.fc(xm).float()
    mse = F.mse_loss(cqt_pred, cqt[:, :t][mask])
    pen = captured["pen"]
    w_ce, w_pen, w_cqt = weights
    return (w_ce * ce + w_pen * pen * n_m + w_cqt * mse * n_m) / n_m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nce", default="vectorized", choices=["vectorized", "fairseq"])
    add_device_args(ap)
    args = ap.parse_args()

    device, autocast, attn = setup_device(args)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # _compute_mask_indices draws from numpy's global RNG
    cfg = mert_hubert_config(args.config, attn=attn, layerdrop=0.0, apply_spec_augment=True,
                             mask_feature_prob=0.0)
    model = HubertModel(cfg).train()
    heads = Heads(cfg.hidden_size, k=CODEBOOKS, c=CODEBOOK_SIZE, d=FINAL_DIM, bins=CQT_BINS)
    heads.randomise(torch.Generator().manual_seed(args.seed))
    model, heads = model.to(device), heads.to(device)
    n = int(round(args.seconds * 24000))
    b = args.batch
    t = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    audio = (0.1 * torch.randn(b, n)).to(device)
    mask = torch.from_numpy(_compute_mask_indices((b, t), 0.8, 5, min_masks=2)).bool().to(device)
    codes = torch.randint(0, CODEBOOK_SIZE, (b, CODEBOOKS, t), dtype=torch.int32).to(device)
    cqt = torch.rand(b, t, CQT_BINS).to(device)
    params = list(model.parameters()) + list(heads.parameters())
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, **fused)
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            if args.nce == "fairseq":
                total, _ = mert_objective(model, heads, audio, mask, codes, cqt)
            else:
                total = mert_objective_vectorized(model, heads, audio, mask, codes, cqt)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        last["loss"] = total.detach()

    times = time_runs(step, args.runs, args.warmup, device)
    med, best = statistics.median(times), min(times)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peak = peak_memory_gib(device)
    audio_s = args.seconds * b
    where = (f"{device}, {args.precision}, attn {attn}, nce {args.nce}" if device.type == "cuda"
             else f"{args.threads} threads, nce {args.nce}")
    print(f"train_step: batch {b} x {n} samples ({args.seconds} s @ 24 kHz), {where}: "
          f"median {med:.3f} s, min {best:.3f} s over {args.runs} runs; {audio_s / med:.2f} audio-s/s; "
          f"peak RSS {rss_mb:.0f} MB" + (f", peak device memory {peak} GiB" if peak else "") +
          f"; masked {int(mask.sum())} of {b * t} frames; last loss {float(last['loss']):.3f}")
    result = dict(
        mode="train_step", device=str(device), precision=args.precision, attn=attn, nce=args.nce,
        threads=args.threads, batch=b, samples=n, runs=args.runs,
        median_s=round(med, 4), min_s=round(best, 4), times_s=[round(x, 4) for x in times],
        audio_s_per_s=round(audio_s / med, 3), peak_rss_mb=round(rss_mb), peak_gib=peak,
        torch=torch.__version__, cpu_count=os.cpu_count(), loadavg=os.getloadavg()[0],
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
