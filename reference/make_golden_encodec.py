"""Golden EnCodec 24 kHz encoder + RVQ codes from transformers 4.38.2 `EncodecModel` (docs/objective.md section 7).

Default mode writes reference/golden/encodec_tiny/ (committed, < 1 MB):
  config.json, model.safetensors  a random-weight EncodecModel with the real architecture (causal SEANet,
                                  strides 2,4,5,8, 2-layer LSTM, 1024-entry codebooks, 8 codebooks at 6 kbps)
                                  but narrow (num_filters 4, hidden_size 8) and with num_residual_layers 2 so
                                  dilated residual convs (dilation 2) are exercised. Only the encoder and
                                  quantizer `embed` tensors are kept (decoder, embed_avg, cluster_size, inited
                                  are dropped to keep the file small; the Rust loader never reads them).
  golden.safetensors              for each case NAME in {chord, short5, short700}:
      NAME.audio    f32 [N]        input waveform (24 kHz, mono)
      NAME.pre_lstm f32 [C, T]     encoder activation entering the LSTM block
      NAME.emb      f32 [D, T]     encoder output embedding (float32 model)
      NAME.emb64    f64 [D, T]     the same computed by the float64 copy of the model (noise floor)
      NAME.codes    i64 [8, T]     model.encode(x, bandwidth=6.0).audio_codes[0, 0]
      NAME.margin   f32 [8, T]     distance gap (2nd best - best) of each chosen code, float64 RVQ on emb64
Full-size mode (`--full DIR`, not committed): default EncodecConfig() (encodec_24khz architecture), random
weights, saved with save_pretrained to DIR, and DIR/golden.safetensors for a 12.5 s clip (case `long`).

Randomisation: weight-norm g ~ U(0.5, 1.5) * ||v[o]|| (so w = g v/||v|| differs from v), LSTM biases
~ U(-0.1, 0.1), codebook q = N(0, 1) * std(residual before q) (codebooks start at zero in HF: every code 0).
Run: python reference/make_golden_encodec.py [--full FULL_DIR]
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import EncodecConfig, EncodecModel

SR = 24000
TINY_DIR = os.path.join(os.path.dirname(__file__), "golden", "encodec_tiny")


def chord_noise(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = np.zeros(n)
    for f in [220.0, 277.18, 329.63, 440.0]:
        for h in (1, 2, 3):
            x += 0.12 / h * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
    x *= np.minimum(1.0, t / 0.05)  # 50 ms fade-in
    x += 0.03 * rng.standard_normal(n)
    return torch.tensor(x, dtype=torch.float32)


@torch.no_grad()
def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("weight_g") or name.endswith("original0"):
            v = dict(model.named_parameters())[name[: -len("weight_g")] + "weight_v"] if name.endswith(
                "weight_g") else dict(model.named_parameters())[name[: -len("original0")] + "original1"]
            norm = v.flatten(1).norm(dim=1).view_as(p)
            p.copy_(norm * (0.5 + torch.rand(p.shape, generator=g)))
        elif ".lstm.bias" in name:
            p.copy_(0.2 * torch.rand(p.shape, generator=g) - 0.1)


@torch.no_grad()
def set_codebooks(model, x, seed, n_q):
    """Codebook q ~ N(0,1) * std of the residual entering stage q (nearest neighbours then vary)."""
    g = torch.Generator().manual_seed(seed + 1)
    r = model.encoder(x).permute(0, 2, 1).reshape(-1, model.config.codebook_dim)
    for q, layer in enumerate(model.quantizer.layers):
        cb = layer.codebook
        std = r.std().item() if q < n_q else 1.0
        cb.embed.copy_(torch.randn(cb.embed.shape, generator=g) * std)
        cb.embed_avg.copy_(cb.embed)
        if q < n_q:
            idx = layer.encode(r.T[None])[0]
            r = r - cb.embed[idx]


def margins(model64, emb64, n_q):
    """Distance gap (second best - best) of each chosen code, RVQ in float64 -> [n_q, T]."""
    r = emb64[0].T.clone()
    out = []
    for layer in model64.quantizer.layers[:n_q]:
        e = layer.codebook.embed
        d = (r * r).sum(1, keepdim=True) - 2 * r @ e.T + (e * e).sum(1)[None]
        best2 = d.topk(2, dim=1, largest=False).values
        out.append((best2[:, 1] - best2[:, 0]).float())
        r = r - e[d.argmin(1)]
    return torch.stack(out)


@torch.no_grad()
def run_case(model, model64, audio, n_q):
    x = audio.view(1, 1, -1)
    seen = {}
    lstm_idx = next(i for i, m in enumerate(model.encoder.layers) if type(m).__name__ == "EncodecLSTM")
    h = model.encoder.layers[lstm_idx].register_forward_hook(lambda m, i, o: seen.update(pre=i[0]))
    emb = model.encoder(x)
    h.remove()
    codes = model.encode(x, bandwidth=6.0).audio_codes[0, 0]
    assert codes.shape == (n_q, math.ceil(audio.numel() / 320)), codes.shape
    emb64 = model64.encoder(x.double())
    codes64 = model64.quantizer.encode(emb64, 6.0)[:, 0]
    marg = margins(model64, emb64, n_q)
    rel = ((emb.double() - emb64).abs().max() / emb64.abs().max()).item()
    same = (codes64 == codes).float().mean().item()
    print(f"  N={audio.numel()} T={codes.shape[1]}: max|emb|={emb.abs().max():.3g} f32-vs-f64 emb max rel "
          f"{rel:.2e}; codes f32==f64 {same:.4f}; min margin {marg.min():.3g}")
    return {"audio": audio, "pre_lstm": seen["pre"][0], "emb": emb[0], "emb64": emb64[0], "codes": codes,
            "margin": marg}


def build(cfg, seed):
    torch.manual_seed(seed)
    model = EncodecModel(cfg).eval()
    randomise(model, seed)
    return model


def clone64(model):
    """A float64 copy (deepcopy fails on weight_norm modules)."""
    m = EncodecModel(model.config).eval()
    m.load_state_dict(model.state_dict())
    return m.double()


def n_quantizers(cfg, bandwidth=6.0):
    return int(max(1, math.floor(bandwidth * 1000 / (math.log2(cfg.codebook_size) * cfg.frame_rate))))


def save_cases(path, cases):
    tensors = {}
    for name, d in cases.items():
        for k, v in d.items():
            tensors[f"{name}.{k}"] = v.detach().contiguous()
    save_file(tensors, path)


def tiny():
    cfg = EncodecConfig(num_filters=4, hidden_size=8, num_residual_layers=2, target_bandwidths=[1.5, 3.0, 6.0])
    n_q = n_quantizers(cfg)
    assert n_q == 8 and cfg.num_quantizers == 8, (n_q, cfg.num_quantizers)
    model = build(cfg, 1)
    chord = chord_noise(int(1.37 * SR), 7)
    set_codebooks(model, chord.view(1, 1, -1), 1, n_q)
    model64 = clone64(model)
    cases = {
        "chord": chord,
        "short5": chord_noise(5, 8) * 3.0,
        "short700": chord_noise(700, 9),
    }
    os.makedirs(TINY_DIR, exist_ok=True)
    out = {k: run_case(model, model64, a, n_q) for k, a in cases.items()}
    save_cases(os.path.join(TINY_DIR, "golden.safetensors"), out)
    keep = {k: v.contiguous() for k, v in model.state_dict().items()
            if k.startswith("encoder.") or k.endswith(".codebook.embed")}
    save_file(keep, os.path.join(TINY_DIR, "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(TINY_DIR)
    print("keys kept:", len(keep), "example:", sorted(keep)[:3])
    for f in sorted(os.listdir(TINY_DIR)):
        print(f"  {f}: {os.path.getsize(os.path.join(TINY_DIR, f))} bytes")


def full(out_dir, seconds):
    cfg = EncodecConfig()
    n_q = n_quantizers(cfg)
    model = build(cfg, 2)
    audio = chord_noise(int(seconds * SR), 11)
    set_codebooks(model, audio[: 5 * SR].view(1, 1, -1), 2, n_q)
    model64 = clone64(model)
    model.save_pretrained(out_dir)
    out = {"long": run_case(model, model64, audio, n_q)}
    save_cases(os.path.join(out_dir, "golden.safetensors"), out)
    with open(os.path.join(out_dir, "config.json")) as f:
        print("saved", out_dir, "n_q", n_q, "keys e.g.", [k for k in json.load(f)][:5])


if __name__ == "__main__":
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", help="write the full-size check model + golden here (not committed)")
    ap.add_argument("--seconds", type=float, default=12.5)
    a = ap.parse_args()
    if a.full:
        full(a.full, a.seconds)
    else:
        tiny()
