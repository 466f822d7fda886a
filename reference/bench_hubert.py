"""Time transformers.HubertModel with the MERT-v1-95M config (random weights, CPU).

    /work/ref-venv/bin/python reference/bench_hubert.py [--threads 2] [--seconds 5] [--runs 5]
    /work/ref-venv/bin/python reference/bench_hubert.py --train-step

Forward: eval(), torch.no_grad(). --train-step: forward + backward of last_hidden_state.sum()
(still eval(), i.e. no dropout / LayerDrop / SpecAugment, so the work is deterministic).
Prints a human line and one machine-readable line starting with "RESULT ".
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import HubertConfig, HubertModel

MERT_CONFIG = Path("/work/shared/data/mert-v1-95m.config.json")

# Keys of the MERT hub config that HubertConfig does not take (bookkeeping or MERT-only).
_NOT_HUBERT = {
    "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version",
    "torch_dtype", "tokenizer_class", "gradient_checkpointing", "hidden_dropout_prob",
    "sample_rate", "attention_relax", "deepnorm", "feature_extractor_cqt",
    "feature_extractor_cqt_bins",
}


def mert_hubert_config(path=MERT_CONFIG, **overrides):
    """HubertConfig equal to MERTModel's for a MERT hub config.json (SPEC 2.1): valid only
    while the MERT-only switches are off, which is asserted."""
    raw = json.loads(Path(path).read_text())
    assert not raw.get("deepnorm", False), "deepnorm=true uses MERT's own encoder"
    assert not raw.get("feature_extractor_cqt", False), "CQT features are MERT-only"
    kwargs = {k: v for k, v in raw.items() if k not in _NOT_HUBERT}
    kwargs.update(overrides)
    cfg = HubertConfig(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def time_runs(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--train-step", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = HubertModel(mert_hubert_config()).eval()
    n = int(round(args.seconds * 24000))
    x = 0.1 * torch.randn(args.batch, n)

    if args.train_step:
        def step():
            model.zero_grad(set_to_none=True)
            model(x).last_hidden_state.sum().backward()
    else:
        def step():
            with torch.no_grad():
                model(x)

    times = time_runs(step, args.runs, args.warmup)
    mode = "train_step" if args.train_step else "forward"
    med, best = statistics.median(times), min(times)
    print(f"{mode}: batch {args.batch} x {n} samples ({args.seconds} s @ 24 kHz), "
          f"{args.threads} threads: median {med:.3f} s, min {best:.3f} s over {args.runs} runs")
    result = dict(
        mode=mode, threads=args.threads, batch=args.batch, samples=n, runs=args.runs,
        median_s=round(med, 4), min_s=round(best, 4), times_s=[round(t, 4) for t in times],
        torch=torch.__version__, cpu_count=os.cpu_count(), loadavg=os.getloadavg()[0],
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
