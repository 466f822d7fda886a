"""Compare `culturemert-raw embed` output with transformers on a full-size random MERT-v1-95M.

Step 1 (Python): write a random-weight model directory and a test WAV (outside the repo):
    python reference/compare_embed.py prepare --model-dir MODEL_DIR
Step 2 (Rust):
    culturemert-raw embed --model MODEL_DIR --layers all --out EMB.safetensors \
        MODEL_DIR/chord_7p3s.wav
Step 3 (Python): compare with transformers' 13 hidden states [13, T, 768]:
    python reference/compare_embed.py check --model-dir MODEL_DIR \
        --embed-out EMB.safetensors [--normalize] [--tol 1e-4]

The model directory holds the MERT hub config.json (model_type "mert_model", as users have it),
model.safetensors with the hub checkpoint's weight-norm spelling (encoder.pos_conv_embed.conv.
weight_g / weight_v), and the WAV (mono, 24 kHz, 16-bit PCM). The waveform fed to transformers
is int16 / 32768 (float32); --normalize runs transformers' Wav2Vec2FeatureExtractor with
do_normalize=True ((x - mean) / sqrt(var + 1e-7), per clip).
"""

import argparse
import math
import shutil
import sys
import wave
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import HubertModel, Wav2Vec2FeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hubert import MERT_CONFIG, mert_hubert_config  # noqa: E402
from make_golden_model import randomise  # noqa: E402

SR = 24000
WAV_NAME = "chord_7p3s.wav"
SEED = 95


def synth_wav(path, seconds=7.3, seed=SEED):
    """A-major-ish chord with a slow amplitude swell + white noise, 16-bit PCM mono."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    x = np.zeros(n)
    for f, a in [(220.0, 0.25), (277.18, 0.2), (329.63, 0.2), (440.0, 0.1), (1108.7, 0.05)]:
        x += a * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    x *= 0.6 + 0.4 * np.sin(2 * math.pi * 0.3 * t)
    x += 0.03 * rng.standard_normal(n)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return n


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, "expects mono 16-bit PCM"
        assert w.getframerate() == SR, f"expects {SR} Hz, got {w.getframerate()}"
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def build_model(config_path):
    model = HubertModel(mert_hubert_config(config_path)).eval()
    return model


def prepare(args):
    d = args.model_dir
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = build_model(MERT_CONFIG)
    randomise(model, torch.Generator().manual_seed(SEED))
    state = OrderedDict()
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        state[k] = v.contiguous()
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    shutil.copyfile(MERT_CONFIG, d / "config.json")
    n = synth_wav(d / WAV_NAME)
    print(f"wrote {d}/model.safetensors ({len(state)} tensors, "
          f"{sum(v.numel() for v in state.values())} numbers), {d}/config.json, "
          f"{d}/{WAV_NAME} ({n} samples)")
    # Round trip: the directory must load back into exactly this model.
    back = load_model(d)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    print("reload check: ok")


def load_model(d):
    model = build_model(d / "config.json")
    # strict load of weight_g/weight_v works through torch's weight-norm compat pre-hook
    model.load_state_dict(load_file(d / "model.safetensors"), strict=True)
    return model.eval()


def pick_tensor(tensors, wanted, wav):
    if wanted:
        names = [wanted]
    elif len(tensors) == 1:
        names = list(tensors)
    else:
        names = [wav.name, wav.stem, str(wav)]
    for n in names:
        if n in tensors:
            return n, tensors[n]
    sys.exit(f"none of {names} in embed output; it holds {sorted(tensors)} (use --tensor)")


def check(args):
    wav = args.wav or args.model_dir / WAV_NAME
    x = read_wav(wav)
    if args.normalize:
        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                      do_normalize=True, return_attention_mask=True)
        x = fe(x, sampling_rate=SR, return_tensors="np").input_values[0]
    model = load_model(args.model_dir)
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        hs = model(torch.from_numpy(np.ascontiguousarray(x))[None], output_hidden_states=True)
    ref = torch.stack([h[0] for h in hs.hidden_states])  # [13, T, 768]

    name, got = pick_tensor(load_file(args.embed_out), args.tensor, Path(wav))
    got = got.float()
    while got.dim() > 3 and got.shape[0] == 1:
        got = got[0]
    print(f"reference [L, T, D] = {list(ref.shape)}; embed tensor '{name}' = {list(got.shape)}")
    if got.shape != ref.shape:
        sys.exit("shape mismatch")
    worst_abs, worst_rel = 0.0, 0.0
    for i in range(ref.shape[0]):
        diff = (got[i] - ref[i]).abs().max().item()
        scale = ref[i].abs().max().item()
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / scale)
        print(f"layer {i:2d}: max|h| {scale:9.4f}  max|diff| {diff:.3e}  rel {diff / scale:.3e}")
    print(f"SUMMARY max_abs_diff={worst_abs:.3e} max_rel_diff={worst_rel:.3e} "
          f"normalize={args.normalize} frames={ref.shape[1]}")
    if args.tol is not None and worst_rel > args.tol:
        sys.exit(f"FAIL: max relative diff {worst_rel:.3e} > tol {args.tol:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write model dir (config.json, model.safetensors) + WAV")
    p.add_argument("--model-dir", type=Path, required=True)
    c = sub.add_parser("check", help="compare an embed output with transformers")
    c.add_argument("--model-dir", type=Path, required=True)
    c.add_argument("--embed-out", type=Path, required=True)
    c.add_argument("--wav", type=Path, help=f"default: <model-dir>/{WAV_NAME}")
    c.add_argument("--tensor", help="tensor name in --embed-out (default: the only one, "
                   "else the WAV file name / stem)")
    c.add_argument("--normalize", action="store_true")
    c.add_argument("--tol", type=float, help="fail if max relative diff exceeds this")
    c.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else check(args)


if __name__ == "__main__":
    main()
