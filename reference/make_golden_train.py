"""Golden file for ten optimizer steps of two-stage training (llm.c-style optimizer fidelity test).

The tiny post-LN model + the loss-golden heads (make_golden_loss.py), trained in PyTorch with:
  * the MERT objective of make_golden_loss.py (eval mode, GradMultiply 0.1, fixed masks)
  * torch.optim.AdamW (CPU single-tensor path), two parameter groups chosen by name patterns:
      no_decay = *.bias, *layer_norm*, masked_spec_embed, label_embs_concat   (weight decay 0)
      decay    = everything else                                             (weight decay 0.1)
    with per-stage betas/eps (set on the param groups at the stage boundary; moments and step counts are
    kept across the boundary)
  * schedule: per stage, linear warm-up then cosine to eta_min, re-warmed at the stage boundary
      stage 1: updates 0-4, warm-up 2, 5e-3 -> 5e-4;  stage 2: updates 5-9, warm-up 1, 2e-3 -> 2e-4
    LR of stage-local update s (u = s+1): u <= W: eta_max*u/W, else
      eta_min + (eta_max-eta_min)*(1+cos(pi*(u-W)/(N-W)))/2
  * freezing: stage 1 trains only feature_extractor.*, label_embs_concat, final_proj.*,
    encoder_cqt_model.* (requires_grad False elsewhere); stage 2 trains everything
  * 2 micro-batches per update, each backward of loss/2 (gradients summed); clip_grad_norm_(1.0)

Records per update (golden/train/golden.safetensors): the micro-batches, both micro-batch losses, the LR
and the pre-clip grad norm (exact decimals in the metadata), and the final parameters. Also reruns
everything in float64 and prints the float32 noise floor.

golden/train/adamw.safetensors: the optimiser alone (`adamw_only`): AdamW + clip_grad_norm_ on recorded
random gradients, final parameters and moments.

Run (CPU, seconds):  python reference/make_golden_train.py
"""

import argparse
import fnmatch
import math
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

from make_golden_loss import CODEBOOK_SIZE, GOLDEN, SPECIALS, Heads, file_name, load_tiny, make_batch, \
    mert_objective

UPDATES = 10
MICRO = 2
CLIP = 1.0
SAMPLES = 600
STAGES = [dict(steps=5, warmup=2, eta_max=5e-3, eta_min=5e-4), dict(steps=5, warmup=1, eta_max=2e-3, eta_min=2e-4)]
STAGE1_TRAINABLE = ["feature_extractor.", "label_embs_concat", "final_proj.", "encoder_cqt_model."]
NO_DECAY = ["*.bias", "*layer_norm*", "masked_spec_embed", "label_embs_concat"]
# group -> per-stage (betas, eps), and weight decay
GROUPS = {
    "no_decay": dict(wd=0.0, stages=[((0.8, 0.99), 1e-6), ((0.85, 0.95), 1e-6)]),
    "decay": dict(wd=0.1, stages=[((0.9, 0.999), 1e-5), ((0.9, 0.95), 1e-8)]),
}


def matches(pattern, name):
    """ParamStore name_matches: glob with '*', else a prefix."""
    return fnmatch.fnmatchcase(name, pattern) if "*" in pattern else name.startswith(pattern)


def lr_at(update):
    s = update
    for st in STAGES:
        if s < st["steps"]:
            u, w, n = s + 1, st["warmup"], st["steps"]
            if u <= w:
                return st["eta_max"] * u / w
            return st["eta_min"] + (st["eta_max"] - st["eta_min"]) * 0.5 * (1 + math.cos(math.pi * (u - w) / (n - w)))
        s -= st["steps"]
    raise ValueError(update)


def train(model, heads, batches, dtype):
    named = [(file_name(n), p) for n, p in model.named_parameters()] + list(heads.named_parameters())
    groups = {"no_decay": [], "decay": []}
    for n, p in named:
        groups["no_decay" if any(matches(pat, n) for pat in NO_DECAY) else "decay"].append(p)
    opt = torch.optim.AdamW([dict(params=groups[g], name=g) for g in GROUPS], lr=0.0, foreach=False)
    losses, lrs, norms = [], [], []
    for update in range(UPDATES):
        stage = 0 if update < STAGES[0]["steps"] else 1
        for n, p in named:
            p.requires_grad_(stage == 1 or any(n.startswith(pre) for pre in STAGE1_TRAINABLE))
        lr = lr_at(update)
        for g in opt.param_groups:
            betas, eps = GROUPS[g["name"]]["stages"][stage]
            g.update(lr=lr, betas=betas, eps=eps, weight_decay=GROUPS[g["name"]]["wd"])
        opt.zero_grad(set_to_none=True)
        step_losses = []
        for m in range(MICRO):
            b = batches[update * MICRO + m]
            total, _ = mert_objective(model, heads, b["audio"].to(dtype), b["mask"], b["codes"] + SPECIALS,
                                      b["cqt"].to(dtype))
            (total / MICRO).backward()
            step_losses.append(total.item())
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], CLIP)
        opt.step()
        losses.append(step_losses)
        lrs.append(lr)
        norms.append(norm.item())
    return losses, lrs, norms, named


def adamw_only(out):
    """torch.optim.AdamW + clip_grad_norm_ alone on given gradients (no model): the element-wise update.
    Three parameters in two groups, one frozen for the first two steps, betas/eps changed at step 3,
    gradients spanning 1e-8 .. 10 (some near eps)."""
    gen = torch.Generator().manual_seed(7007)
    shapes = {"lin.weight": (5, 3), "lin.bias": (7,), "late.weight": (4,)}
    params = {n: torch.nn.Parameter(torch.randn(s, generator=gen)) for n, s in shapes.items()}
    g = OrderedDict((f"init.{n}", p.detach().clone()) for n, p in params.items())
    opt = torch.optim.AdamW([dict(params=[params["lin.bias"]], name="no_decay", weight_decay=0.0),
                             dict(params=[params["lin.weight"], params["late.weight"]], name="decay",
                                  weight_decay=0.1)], lr=0.0, foreach=False)
    lrs, norms = [], []
    for step in range(6):
        stage = 0 if step < 3 else 1
        params["late.weight"].requires_grad_(step >= 2)
        lr = 0.01 * (1 + step) / (1 + 0.5 * step * step)
        for grp in opt.param_groups:
            betas, eps = GROUPS[grp["name"]]["stages"][stage]
            grp.update(lr=lr, betas=betas, eps=eps)
        opt.zero_grad(set_to_none=True)
        for n, p in params.items():
            if p.requires_grad:
                mag = 10.0 ** torch.randint(-8, 2, p.shape, generator=gen).float()
                p.grad = torch.randn(p.shape, generator=gen) * mag
                g[f"grad.{step}.{n}"] = p.grad.clone()
        norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0).item())
        opt.step()
        lrs.append(lr)
    for n, p in params.items():
        g[f"final.{n}"] = p.detach().clone()
        g[f"exp_avg.{n}"] = opt.state[p]["exp_avg"].clone()
        g[f"exp_avg_sq.{n}"] = opt.state[p]["exp_avg_sq"].clone()
        g[f"step.{n}"] = torch.tensor([int(opt.state[p]["step"].item())], dtype=torch.int32)
    save_file(g, out / "adamw.safetensors", metadata={"lr": ",".join(map(repr, lrs)),
                                                      "grad_norm": ",".join(map(repr, norms))})
    print(f"adamw-only: grad norms {[f'{v:.4g}' for v in norms]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN / "train")
    args = ap.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    args.out.mkdir(parents=True, exist_ok=True)

    adamw_only(args.out)
    model = load_tiny()
    heads = Heads(model.config.hidden_size)
    heads.load_state_dict(load_file(GOLDEN / "loss" / "heads.safetensors"))
    gen = torch.Generator().manual_seed(6006)
    batches = [make_batch(gen, model, 2, SAMPLES) for _ in range(UPDATES * MICRO)]

    losses, lrs, norms, named = train(model, heads, batches, torch.float32)

    g = OrderedDict()
    for i, b in enumerate(batches):
        g[f"audio.{i}"] = b["audio"].contiguous()
        g[f"mask.{i}"] = b["mask"].to(torch.int32).contiguous()
        g[f"codes.{i}"] = b["codes"].contiguous()
        g[f"cqt.{i}"] = b["cqt"].contiguous()
    g["codebook_size"] = torch.tensor([CODEBOOK_SIZE], dtype=torch.int32)
    # Per-update records as exact decimal (repr) lists in the metadata (the Rust reader has no f64 tensors).
    meta = {"losses": ",".join(repr(v) for row in losses for v in row), "lr": ",".join(map(repr, lrs)),
            "grad_norm": ",".join(map(repr, norms))}
    for n, p in named:
        g[f"final.{n}"] = p.detach().contiguous()
    save_file(g, args.out / "golden.safetensors", metadata=meta)
    for u in range(UPDATES):
        print(f"update {u}: lr {lrs[u]:.6g} losses {losses[u][0]:.7g} {losses[u][1]:.7g} grad_norm {norms[u]:.6g}")

    # float64 rerun: the float32 noise floor of losses and final parameters.
    m64 = load_tiny().double()
    h64 = Heads(model.config.hidden_size).double()
    h64.load_state_dict(load_file(GOLDEN / "loss" / "heads.safetensors"))
    l64, _, n64, named64 = train(m64, h64, batches, torch.float64)
    loss_err = max(abs(a - b) / abs(b) for la, lb in zip(losses, l64) for a, b in zip(la, lb))
    p64 = dict(named64)
    init = dict((file_name(n), p) for n, p in load_tiny().named_parameters())
    init.update(load_file(GOLDEN / "loss" / "heads.safetensors"))
    # k_proj.bias has an exactly-zero true gradient, so Adam moves it by amplified rounding noise only:
    # measured against the movement of the same layer's k_proj.weight (as the Rust test does).
    worst = {False: (0.0, ""), True: (0.0, "")}
    for n, p in named:
        scale_name = n.replace("k_proj.bias", "k_proj.weight")
        moved = (p64[scale_name] - init[scale_name].double()).abs().max().item()
        err = (p.detach().double() - p64[n]).abs().max().item() / moved
        worst[scale_name != n] = max(worst[scale_name != n], (err, n))
    print(f"f32 vs f64: worst loss rel {loss_err:.2e}, worst grad-norm rel "
          f"{max(abs(a - b) / b for a, b in zip(norms, n64)):.2e}, worst final-param err / max movement {worst[False][0]:.2e} ({worst[False][1]}), "
          f"k_proj.bias err / k_proj.weight movement {worst[True][0]:.2e}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size} bytes)")


if __name__ == "__main__":
    main()
