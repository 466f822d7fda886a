"""Golden log-mel for src/audio/mel.rs (the random-projection teacher's features).

torchaudio is not available for torch 2.15, so the reference is built from torch.stft (float64,
periodic Hann from torch.hann_window, center=False on an explicitly zero-padded signal) and a numpy
HTK mel filterbank written from torchaudio's documented formula (melscale_fbanks, norm=None):
  corners f_i = mel^-1(linspace(mel(0), mel(sr/2), n_mels + 2)), mel(f) = 2595 log10(1 + f/700)
  W[m, k] = max(0, min((f_k - f_m) / (f_{m+1} - f_m), (f_{m+2} - f_k) / (f_{m+2} - f_{m+1})))
Framing of the Rust code: frame t is centred at sample 320 t + 160, frames = ceil(N / 320), zeros
outside the clip. That equals torch.stft(center=False) on the clip padded with n_fft/2 - hop/2 zeros on
the left (frame t starts at padded index 320 t) and enough zeros on the right.
Output: reference/golden/mel.safetensors with
  audio   f32 [N]        a ragged test clip (N = 12345: tones, a chirp, an impulse, noise)
  logmel  f32 [T, 128]   ln(mel power + 1e-6), T = ceil(N / 320) = 39
  corners f64 [130]      filter corner frequencies in Hz
Run: python reference/make_golden_mel.py
"""
import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file

SR, N_FFT, HOP, N_MELS = 24000, 2048, 320, 128


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def filterbank():
    n_freqs = N_FFT // 2 + 1
    freqs = np.linspace(0.0, SR / 2, n_freqs)
    corners = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SR / 2), N_MELS + 2))
    widths = np.diff(corners)
    slopes = corners[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    fb = np.maximum(0.0, np.minimum(down, up))  # [n_freqs, n_mels]
    return fb.T, corners


def log_mel(x):
    n = len(x)
    frames = math.ceil(n / HOP)
    left = N_FFT // 2 - HOP // 2
    total = HOP * (frames - 1) + N_FFT
    padded = np.zeros(total, dtype=np.float64)
    padded[left:left + n] = x[: total - left]
    spec = torch.stft(
        torch.from_numpy(padded), N_FFT, hop_length=HOP, win_length=N_FFT,
        window=torch.hann_window(N_FFT, periodic=True, dtype=torch.float64),
        center=False, return_complex=True,
    )  # [n_freqs, frames]
    power = (spec.abs() ** 2).numpy()
    assert power.shape[1] == frames, power.shape
    fb, corners = filterbank()
    mel = fb @ power  # [n_mels, frames]
    return np.log(mel + 1e-6).T, corners


def clip():
    n = 12345
    t = np.arange(n) / SR
    rng = np.random.RandomState(7)
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t)
    x += 0.2 * np.sin(2 * np.pi * 3150.0 * t + 0.4) * (t > 0.2)
    x += 0.1 * np.sin(2 * np.pi * (100.0 * t + 4000.0 * t * t))  # chirp 100 Hz -> ~4 kHz
    x[5000] += 0.8
    x += 0.01 * rng.randn(n)
    return x.astype(np.float32)


def main():
    x = clip()
    lm, corners = log_mel(x.astype(np.float64))
    out = os.path.join(os.path.dirname(__file__), "golden", "mel.safetensors")
    save_file(
        {"audio": x, "logmel": np.ascontiguousarray(lm, dtype=np.float32), "corners": corners.astype(np.float64)},
        out,
    )
    print(out, lm.shape, float(lm.min()), float(lm.max()))


if __name__ == "__main__":
    main()
