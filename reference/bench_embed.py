"""The transformers peer of `culturemert-raw embed --layers all`: load a MERT model directory, read
WAVs, run HubertModel on each whole clip and write all 13 hidden states [13, T, 768] per file.
Time it as a whole process, like the engine's command:

    time python reference/bench_embed.py --model-dir MODEL_DIR --threads 2 --out OUT.safetensors A.wav B.wav ...
    time culturemert-raw embed --model MODEL_DIR --threads 2 --layers all --out OUT.safetensors A.wav B.wav ...

MODEL_DIR is written by `compare_embed.py prepare` (a full-size random MERT-v1-95M with the hub's
config.json and weight-norm spelling). WAVs: mono 16-bit PCM at 24 kHz (e.g. from `culturemert-raw
synth --seconds 30`). Note: transformers 5.x returns the pre-LayerNorm tensor as the last hidden state
of a pre-LN encoder; MERT-v1-95M is post-LN, where both agree.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_embed import load_model, read_wav  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("wavs", type=Path, nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model_dir)
    out = {}
    with torch.inference_mode():
        for wav in args.wavs:
            x = torch.from_numpy(read_wav(wav))[None]
            hs = model(x, output_hidden_states=True).hidden_states
            out[wav.stem] = torch.stack([h[0] for h in hs]).contiguous()
    save_file(out, args.out)
    print(f"RESULT files={len(args.wavs)} seconds_in_python={time.perf_counter() - t0:.3f} "
          f"threads={args.threads}")


if __name__ == "__main__":
    main()
