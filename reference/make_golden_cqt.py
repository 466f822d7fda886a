"""Golden CQT outputs from nnAudio 0.3.4 `CQT1992v2` with MERT's settings (docs/objective.md section 5).

Writes reference/golden/cqt.safetensors with, for each case NAME in {sine440, chords, short}:
  NAME.audio  f32 [N]           the input waveform at 24 kHz
  NAME.cqt    f32 [frames, 336] nnAudio's magnitude CQT (transposed to frames-major)
  lengths     f32 [336]  nnAudio's kernel lengths l_k;  freqs f64 [336]  its centre frequencies
Run: python reference/make_golden_cqt.py
"""
import os

import numpy as np
import torch
from nnAudio.features.cqt import CQT1992v2
from safetensors.numpy import save_file

SR = 24000
OUT = os.path.join(os.path.dirname(__file__), "golden", "cqt.safetensors")


def mert_cqt():
    # exactly the MERT call (model_cqt_pred): sr 24000, hop sr//75, fmin 32.7, 336 bins, 48/octave
    return CQT1992v2(sr=SR, hop_length=SR // 75, fmin=32.7, fmax=None, n_bins=336,
                     bins_per_octave=336 // 7, filter_scale=1, norm=1, window="hann",
                     center=True, pad_mode="constant", trainable=False,
                     output_format="Magnitude", verbose=False)


def cases():
    t = np.arange(SR) / SR
    sine = np.sin(2 * np.pi * 440.0 * t)
    rng = np.random.default_rng(1234)
    n = int(2.3 * SR)
    t = np.arange(n) / SR
    mix = np.zeros(n)
    # three chords (C major, A minor, G7-ish) with 3 harmonics each, plus white noise
    chords = [[261.63, 329.63, 392.00], [220.00, 261.63, 329.63], [196.00, 246.94, 293.66, 349.23]]
    seg = n // len(chords)
    for c, freqs in enumerate(chords):
        sl = slice(c * seg, n if c == len(chords) - 1 else (c + 1) * seg)
        for f in freqs:
            for h, a in [(1, 0.2), (2, 0.08), (3, 0.04)]:
                mix[sl] += a * np.sin(2 * np.pi * f * h * t[sl] + rng.uniform(0, 2 * np.pi))
    mix += 0.05 * rng.standard_normal(n)
    short = 0.3 * np.sin(2 * np.pi * 1000.0 * np.arange(int(0.1 * SR)) / SR) \
        + 0.02 * rng.standard_normal(int(0.1 * SR))
    return {"sine440": sine, "chords": mix, "short": short}


def main():
    cqt = mert_cqt()
    cqt64 = mert_cqt().double()
    tensors = {"lengths": cqt.lenghts.numpy().astype(np.float32),
               "freqs": np.asarray(cqt.frequencies, dtype=np.float64)}
    for name, x in cases().items():
        x32 = x.astype(np.float32)
        with torch.no_grad():
            y = cqt(torch.from_numpy(x32)[None])[0].T.contiguous().numpy()  # [frames, 336]
            y64 = cqt64(torch.from_numpy(x32.astype(np.float64))[None])[0].T.numpy()
        frame_max = y64.max(axis=1, keepdims=True)
        rel = np.abs(y - y64) / np.maximum(frame_max, 1e-30)
        print(f"{name}: n={len(x32)} frames={y.shape[0]} peak bin={np.argmax(y.max(axis=0))} "
              f"max={y.max():.4f}; nnAudio f32 vs f64 conv: max abs {np.abs(y - y64).max():.3e}, "
              f"max rel-to-frame-max {rel.max():.3e}")
        tensors[f"{name}.audio"] = x32
        tensors[f"{name}.cqt"] = y.astype(np.float32)
    save_file(tensors, OUT)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
