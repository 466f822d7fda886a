"""Time transformers.HubertModel with the MERT-v1-95M config (random weights, CPU or GPU).

    python reference/bench_hubert.py [--threads 2] [--seconds 5] [--runs 5]
    python reference/bench_hubert.py --train-step
    python reference/bench_hubert.py --device cuda --precision bf16 --attn sdpa --batch 4

Forward: eval(), torch.no_grad(). --train-step: forward + backward of last_hidden_state.sum()
(still eval(), i.e. no dropout / LayerDrop / SpecAugment, so the work is deterministic).
--device cuda: TF32 off for f32 (strict f32 like the engine), torch.autocast(bfloat16) for bf16, times
taken after torch.cuda.synchronize(), peak memory from torch.cuda.max_memory_allocated().
The config is configs/mert-v1-95m.json of this repository (--config to change it).
Prints a human line and one machine-readable line starting with "RESULT ".
"""

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import HubertConfig, HubertModel

MERT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mert-v1-95m.json"

# Keys of the MERT hub config that HubertConfig does not take (bookkeeping or MERT-only).
_NOT_HUBERT = {
    "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version",
    "torch_dtype", "tokenizer_class", "gradient_checkpointing", "hidden_dropout_prob",
    "sample_rate", "attention_relax", "deepnorm", "feature_extractor_cqt",
    "feature_extractor_cqt_bins",
}


def mert_hubert_config(path=MERT_CONFIG, attn="eager", **overrides):
    """HubertConfig equal to MERTModel's for a MERT hub config.json (docs/model.md, introduction): valid only
    while the MERT-only switches are off, which is asserted."""
    raw = json.loads(Path(path).read_text())
    assert not raw.get("deepnorm", False), "deepnorm=true uses MERT's own encoder"
    assert not raw.get("feature_extractor_cqt", False), "CQT features are MERT-only"
    kwargs = {k: v for k, v in raw.items() if k not in _NOT_HUBERT}
    kwargs.update(overrides)
    cfg = HubertConfig(**kwargs)
    cfg._attn_implementation = attn
    return cfg


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn, runs, warmup, device=torch.device("cpu")):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def add_device_args(ap):
    """--device / --precision / --attn / --config, shared with bench_train.py."""
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--attn", default=None, choices=["sdpa", "eager"],
                    help="attention implementation (default: sdpa on a GPU, eager on the CPU)")
    ap.add_argument("--config", type=Path, default=MERT_CONFIG)


def setup_device(args):
    """The torch device, the autocast context for --precision and the attention implementation."""
    device = torch.device(args.device)
    if device.type == "cuda":
        # Strict f32 like the engine: no TF32 in matmuls or convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats(device)
    else:
        torch.set_num_threads(args.threads)
    if args.precision == "bf16":
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext()
    attn = args.attn or ("sdpa" if device.type == "cuda" else "eager")
    return device, autocast, attn


def peak_memory_gib(device):
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--train-step", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    add_device_args(ap)
    args = ap.parse_args()

    device, autocast, attn = setup_device(args)
    torch.manual_seed(args.seed)
    model = HubertModel(mert_hubert_config(args.config, attn=attn)).eval().to(device)
    n = int(round(args.seconds * 24000))
    x = (0.1 * torch.randn(args.batch, n)).to(device)

    if args.train_step:
        def step():
            model.zero_grad(set_to_none=True)
            with autocast:
                h = model(x).last_hidden_state
            h.float().sum().backward()
    else:
        def step():
            with torch.no_grad(), autocast:
                model(x)

    times = time_runs(step, args.runs, args.warmup, device)
    mode = "train_step" if args.train_step else "forward"
    med, best = statistics.median(times), min(times)
    peak = peak_memory_gib(device)
    where = f"{device}, {args.precision}, attn {attn}" if device.type == "cuda" else f"{args.threads} threads"
    print(f"{mode}: batch {args.batch} x {n} samples ({args.seconds} s @ 24 kHz), "
          f"{where}: median {med:.3f} s, min {best:.3f} s over {args.runs} runs; "
          f"{args.seconds * args.batch / med:.2f} audio-s/s" + (f"; peak {peak} GiB" if peak else ""))
    result = dict(
        mode=mode, device=str(device), precision=args.precision, attn=attn, threads=args.threads,
        batch=args.batch, samples=n, runs=args.runs,
        median_s=round(med, 4), min_s=round(best, 4), times_s=[round(t, 4) for t in times],
        audio_s_per_s=round(args.seconds * args.batch / med, 3), peak_gib=peak,
        torch=torch.__version__, cpu_count=os.cpu_count(), loadavg=os.getloadavg()[0],
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
