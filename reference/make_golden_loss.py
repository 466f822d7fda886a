"""Golden file for the MERT pre-training objective (docs/objective.md section 2), loss and every gradient.

Built on transformers' HubertModel (the tiny_postln golden model, eval mode, all dropout 0) plus the
MERT/HuBERT heads, computed the way fairseq's MERTModel + HubertCriterion compute it:

  * conv features -> GradMultiply(0.1) -> feature penalty mean(features.float()^2)  (a forward hook on
    HubertModel.feature_extractor, i.e. before the transpose and the projection LayerNorm, as fairseq)
  * masked frames replaced by masked_spec_embed after the feature projection (HF `_mask_hidden_states`
    with mask_time_indices; it needs config.apply_spec_augment = True, the golden config has False)
  * final_proj Linear(H -> K*D), torch chunk(K); label_embs_concat [K*C, D] split(C);
    fairseq compute_nce: cosine (torch.cosine_similarity in fp32) against [positive; all C codewords] / 0.1,
    the negative equal to the positive set to -inf, cross entropy with target 0, summed, masked frames only
  * CQT head Linear(H -> bins), nn.MSELoss() on masked frames
  * total = (1 * sum_k CE_k + 10 * pen * N_m + 1 * MSE * N_m) / N_m

Heads: K=3 codebooks, C=13 rows per codebook (a 9-code teacher + 4 fairseq Dictionary specials, so the
row of code c is c + 4), D=4, 7 CQT bins.

Writes reference/golden/loss/heads.safetensors and reference/golden/loss/golden.safetensors.
The module also exports `load_tiny`, `Heads`, `mert_objective` for make_golden_train.py.

Run (CPU, seconds):  python reference/make_golden_loss.py
"""

import argparse
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import HubertModel
from transformers.utils import logging as hf_logging

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
MODEL_DIR = GOLDEN / "tiny_postln"

CODEBOOKS = 3
CODEBOOK_SIZE = 9  # teacher codes 0..8
SPECIALS = 4  # fairseq Dictionary <s> <pad> </s> <unk>
CODEWORDS = CODEBOOK_SIZE + SPECIALS  # C = 13 rows per codebook
FINAL_DIM = 4
CQT_BINS = 7
LOGIT_TEMP = 0.1
WEIGHTS = (1.0, 10.0, 1.0)  # codebook CE, feature penalty, CQT MSE (MERT code defaults)

WN = {
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
}


def file_name(torch_name):
    """Model parameter name as written in tiny_postln/model.safetensors (weight_g/weight_v spelling)."""
    return WN.get(torch_name, torch_name)


class GradMultiply(torch.autograd.Function):
    """fairseq GradMultiply: identity forward, gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.new(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class Heads(torch.nn.Module):
    """MERT pre-training heads under fairseq's parameter names."""

    def __init__(self, hidden, k=CODEBOOKS, c=CODEWORDS, d=FINAL_DIM, bins=CQT_BINS):
        super().__init__()
        self.k, self.c = k, c
        self.final_proj = torch.nn.Linear(hidden, k * d)
        self.label_embs_concat = torch.nn.Parameter(torch.empty(k * c, d))
        self.encoder_cqt_model = torch.nn.Module()
        self.encoder_cqt_model.fc = torch.nn.Linear(hidden, bins)

    @torch.no_grad()
    def randomise(self, gen):
        h = self.final_proj.weight.shape[1]
        self.final_proj.weight.copy_(torch.randn(self.final_proj.weight.shape, generator=gen) / h**0.5)
        self.final_proj.bias.copy_(0.1 * torch.randn(self.final_proj.bias.shape, generator=gen))
        self.label_embs_concat.copy_(torch.rand(self.label_embs_concat.shape, generator=gen))  # fairseq U(0,1)
        fc = self.encoder_cqt_model.fc
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) / h**0.5)
        fc.bias.copy_(0.1 * torch.randn(fc.bias.shape, generator=gen))


def load_tiny():
    """The tiny post-LN golden model, eval mode, with masking by mask_time_indices enabled."""
    model = HubertModel.from_pretrained(MODEL_DIR, attn_implementation="eager")
    model.config.apply_spec_augment = True  # else _mask_hidden_states returns early
    model.config.mask_feature_prob = 0.0
    return model.eval()


def compute_nce(x, pos, negs):
    """fairseq HubertModel.compute_nce: x [N, D], pos [N, D], negs [C, N, D] -> logits [N, 1 + C]."""
    neg_is_pos = (pos == negs).all(-1)
    pos = pos.unsqueeze(0)
    targets = torch.cat([pos, negs], dim=0)
    logits = torch.cosine_similarity(x.float(), targets.float(), dim=-1).type_as(x)
    logits = logits / LOGIT_TEMP
    if neg_is_pos.any():
        logits[1:][neg_is_pos] = float("-inf")
    return logits.transpose(0, 1)


def fairseq_correct(logits):
    """fairseq HubertCriterion.compute_correct: arg-max is the positive (and not all equal)."""
    mx = logits.argmax(-1) == 0
    mn = logits.argmin(-1) == 0
    return int(mx.long().sum() - (mx & mn).long().sum())


def mert_objective(model, heads, audio, mask, rows, cqt, feature_grad_mult=0.1, weights=WEIGHTS):
    """The MERT loss for one batch. mask [B, T] bool; rows [B, K, Tc] codeword rows (code + specials);
    cqt [B, Tq, bins]. Returns (total, parts dict)."""
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
    assert mask.shape == (audio.shape[0], t)
    xm = x[mask]  # [N_m, H], (b, t) row-major order
    n_m = xm.shape[0]

    proj = heads.final_proj(xm).chunk(heads.k, dim=-1)
    embs = heads.label_embs_concat.split(heads.c, 0)
    ce = torch.zeros((), dtype=x.dtype)
    correct = 0
    for k in range(heads.k):
        y = rows[:, k, :t][mask]
        pos = torch.index_select(embs[k], 0, y.long())
        negs = embs[k].unsqueeze(1).expand(-1, n_m, -1)
        logits = compute_nce(proj[k], pos, negs)
        target = logits.new_zeros(n_m, dtype=torch.long)
        ce = ce + F.cross_entropy(logits, target, reduction="sum")
        correct += fairseq_correct(logits.detach())

    cqt_pred = heads.encoder_cqt_model.fc(xm)
    mse = torch.nn.MSELoss()(cqt_pred, cqt[:, :t][mask])
    pen = captured["pen"]
    w_ce, w_pen, w_cqt = weights
    # HubertCriterion: loss = CE + sum_i coef_i * extra_i * sample_size; the trainer divides by sample_size.
    total = (w_ce * ce + w_pen * pen * n_m + w_cqt * mse * n_m) / n_m
    parts = dict(codebook_ce=ce / n_m, feature_penalty=pen, cqt_mse=mse, masked_frames=n_m,
                 accuracy=correct / (n_m * heads.k))
    return total, parts


def make_audio(gen, b, n):
    t = torch.arange(n, dtype=torch.float64) / 24000.0
    x = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        for _ in range(3):
            f = 200.0 + 3000.0 * torch.rand((), generator=gen, dtype=torch.float64)
            x[i] += 0.2 * torch.sin(2 * torch.pi * f * t + 6.283 * torch.rand((), generator=gen, dtype=torch.float64))
        x[i] += 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.float()


def make_batch(gen, model, b, n):
    """Random equal-length clips, a random mask (about half the frames), codes and CQT targets."""
    audio = make_audio(gen, b, n)
    t = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    mask = torch.rand(b, t, generator=gen) < 0.5
    mask[:, 0] = True  # never empty
    codes = torch.randint(0, CODEBOOK_SIZE, (b, CODEBOOKS, t + 1), generator=gen, dtype=torch.int32)
    cqt = torch.randn(b, t + 2, CQT_BINS, generator=gen).abs() * 2.0
    return dict(audio=audio, mask=mask, codes=codes, cqt=cqt)


def run(model, heads, batch):
    total, parts = mert_objective(model, heads, batch["audio"], batch["mask"], batch["codes"] + SPECIALS,
                                  batch["cqt"])
    return total, parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN / "loss")
    args = ap.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    args.out.mkdir(parents=True, exist_ok=True)

    model = load_tiny()
    gen = torch.Generator().manual_seed(5005)
    heads = Heads(model.config.hidden_size)
    heads.randomise(gen)
    batch = make_batch(gen, model, 2, 1000)

    total, parts = run(model, heads, batch)
    total.backward()

    head_tensors = OrderedDict((n, p.detach().contiguous()) for n, p in heads.named_parameters())
    save_file(head_tensors, args.out / "heads.safetensors")

    g = OrderedDict()
    g["audio"] = batch["audio"].contiguous()
    g["mask"] = batch["mask"].to(torch.int32).contiguous()
    g["codes"] = batch["codes"].contiguous()
    g["codebook_size"] = torch.tensor([CODEBOOK_SIZE], dtype=torch.int32)
    g["cqt"] = batch["cqt"].contiguous()
    g["total"] = total.detach().reshape(1)
    for k in ("codebook_ce", "feature_penalty", "cqt_mse"):
        g[k] = parts[k].detach().reshape(1).float()
    g["masked_frames"] = torch.tensor([parts["masked_frames"]], dtype=torch.int32)
    g["accuracy"] = torch.tensor([parts["accuracy"]], dtype=torch.float32)
    for n, p in model.named_parameters():
        g["grad." + file_name(n)] = (p.grad if p.grad is not None else torch.zeros_like(p)).contiguous()
    for n, p in heads.named_parameters():
        g["grad." + n] = p.grad.contiguous()
    save_file(g, args.out / "golden.safetensors")
    print(f"N_m={parts['masked_frames']} total={total.item():.7g} ce={parts['codebook_ce'].item():.7g} "
          f"pen={parts['feature_penalty'].item():.7g} mse={parts['cqt_mse'].item():.7g} acc={parts['accuracy']:.4f}")

    # float32 noise floor: the same computation in float64.
    m64 = load_tiny().double()
    h64 = Heads(model.config.hidden_size).double()
    h64.load_state_dict(heads.state_dict())
    b64 = dict(batch, audio=batch["audio"].double(), cqt=batch["cqt"].double())
    t64, p64 = run(m64, h64, b64)
    t64.backward()
    grads64 = {"grad." + file_name(n): p.grad for n, p in m64.named_parameters()}
    grads64.update({"grad." + n: p.grad for n, p in h64.named_parameters()})
    worst = max(((g[n].double() - v).abs().max() / v.abs().max().clamp_min(1e-30)).item()
                for n, v in grads64.items() if not n.endswith("k_proj.bias"))
    print(f"f32 vs f64: total rel {abs(total.item() - t64.item()) / abs(t64.item()):.2e}, "
          f"worst grad rel (k_proj.bias excluded) {worst:.2e}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size} bytes)")


if __name__ == "__main__":
    main()
