"""Golden files for the MERT (HubertModel) forward pass and its gradients.

Builds two tiny random-weight transformers.HubertModel configs, saves each HF-style
(config.json + model.safetensors) and writes, per model:

  golden_batch.safetensors   2 clips (1000 samples; 777 samples + zero padding),
                             called with attention_mask as transformers users do
  golden_single.safetensors  1 clip of 1234 samples, no attention mask

Each golden holds the inputs, every hidden state, fixed random probes, the scalar
loss = sum_i <hidden_states_i, probe_i> (all frames, padded ones included), and
grad.<name> for every parameter in model.safetensors (same names).

Run (CPU, a few seconds):
    python reference/make_golden_model.py
"""

import argparse
import json
import math
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import HubertConfig, HubertModel
from transformers.utils import logging as hf_logging

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"

# Shared tiny dims. num_conv_pos_embeddings is even so SamePad drops the last frame.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    feat_extract_activation="gelu",
    conv_dim=[16, 16, 16],
    conv_kernel=[10, 3, 2],
    conv_stride=[5, 2, 2],
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    layer_norm_eps=1e-5,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    apply_spec_augment=False,
    # mask_time_prob > 0 keeps masked_spec_embed as a parameter (HubertModel.__init__);
    # with apply_spec_augment=False it is never used in forward.
    mask_time_prob=0.05,
    feat_proj_layer_norm=True,
)

# name -> (config overrides, weight-norm spelling written to model.safetensors, seed)
MODELS = {
    # MERT-v1-95M form: GroupNorm on conv 0 only, no conv bias, post-LN encoder.
    "tiny_postln": (
        dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
        "old",
        1001,
    ),
    # MERT-v1-330M form (hub config.json): feat_extract_norm "group", conv_bias false,
    # do_stable_layer_norm true (pre-LN encoder + final encoder.layer_norm), deepnorm false.
    "tiny_preln": (
        dict(feat_extract_norm="group", do_stable_layer_norm=True, conv_bias=False),
        "new",
        2002,
    ),
}
# Only written with --extra (or --only NAME).
EXTRA_MODELS = {
    # The MERT-v1-95M form with ReLU instead of GELU everywhere (hidden_act and feat_extract_activation):
    # checks that the activation is the config's choice in every place it is used.
    "tiny_postln_relu": (
        dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
             hidden_act="relu", feat_extract_activation="relu"),
        "old",
        4004,
    ),
    # Not a MERT form: LayerNorm after every conv + conv biases.
    "tiny_preln_layerconv": (
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
        "new",
        3003,
    ),
}

WN_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
WN_OLD = ("weight_g", "weight_v")


def build_config(overrides):
    cfg = HubertConfig(**{**TINY, **overrides})
    cfg._attn_implementation = "eager"
    return cfg


@torch.no_grad()
def randomise(model, gen):
    """Every parameter gets random values so no gradient is trivially structured;
    scales keep activations O(1)."""

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std + mean

    for name, p in model.named_parameters():
        shape = p.shape
        leaf = name.rsplit(".", 1)[-1]
        if "layer_norm" in name or name.endswith(("norm.weight", "norm.bias")):
            # LayerNorm / GroupNorm affine
            v = normal(shape, 0.2, 1.0) if leaf == "weight" else normal(shape, 0.1)
        elif name.endswith("original0") or leaf == "weight_g":
            v = normal(shape, 0.3, 1.0)  # weight-norm g, one per tap
        elif name.endswith("original1") or leaf == "weight_v":
            v = normal(shape, 1.0)  # weight-norm v (only its direction matters)
        elif leaf == "bias":
            v = normal(shape, 0.1)
        elif name == "masked_spec_embed":
            v = normal(shape, 1.0)
        elif p.dim() == 3:  # conv weight [out, in, k]
            fan_in = shape[1] * shape[2]
            v = normal(shape, 1.5 / math.sqrt(fan_in))
        elif p.dim() == 2:  # linear weight [out, in]
            gain = 1.5 if (".q_proj." in name or ".k_proj." in name) else 1.0
            v = normal(shape, gain / math.sqrt(shape[1]))
        else:
            raise RuntimeError(f"no init rule for {name} {tuple(shape)}")
        p.copy_(v.to(p.dtype))


def file_name(torch_name, spelling):
    """Parameter name as written in model.safetensors ('old' = weight_g/weight_v)."""
    if spelling == "old":
        for new, old in zip(WN_NEW, WN_OLD):
            if torch_name.endswith(new):
                return torch_name[: -len(new)] + old
    return torch_name


def make_audio(gen, n):
    """A few sines + noise, amplitude ~0.5."""
    t = torch.arange(n, dtype=torch.float64) / 24000.0
    x = torch.zeros(n, dtype=torch.float64)
    for _ in range(3):
        f = 200.0 + 3000.0 * torch.rand((), generator=gen, dtype=torch.float64)
        ph = 6.283 * torch.rand((), generator=gen, dtype=torch.float64)
        x += 0.2 * torch.sin(2 * math.pi * f * t + ph)
    x += 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x.float()


def run_case(model, spelling, input_values, attention_mask, probe_gen):
    """Forward with output_hidden_states, loss = sum_i <h_i, probe_i>, backward."""
    model.zero_grad(set_to_none=True)
    out = model(
        input_values,
        attention_mask=attention_mask,
        output_hidden_states=True,
        return_dict=True,
    )
    hs = out.hidden_states
    probes = [torch.randn(h.shape, generator=probe_gen, dtype=torch.float32) for h in hs]
    loss = sum((h * p).sum() for h, p in zip(hs, probes))
    loss.backward()

    t = OrderedDict()
    t["input_values"] = input_values.contiguous()
    if attention_mask is not None:
        t["attention_mask"] = attention_mask.to(torch.int32).contiguous()
        lens = model._get_feat_extract_output_lengths(attention_mask.sum(-1))
    else:
        lens = torch.full((input_values.shape[0],), hs[0].shape[1])
        lens_check = model._get_feat_extract_output_lengths(torch.tensor(input_values.shape[1]))
        assert int(lens_check) == hs[0].shape[1]
    t["frame_lengths"] = lens.to(torch.int32)
    for i, h in enumerate(hs):
        t[f"hidden_states.{i}"] = h.detach().contiguous()
    for i, p in enumerate(probes):
        t[f"probe.{i}"] = p.contiguous()
    t["loss"] = loss.detach().reshape(1)
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        t["grad." + file_name(name, spelling)] = g.detach().contiguous()
    return t


def f64_discrepancy(model, input_values, attention_mask, golden):
    """max |f32 - f64| over hidden states and grads, each relative to max |f64| of
    that tensor, so the Rust tests know the float32 noise floor to expect."""
    m64 = HubertModel(model.config)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    hs = m64(input_values.double(), attention_mask=attention_mask, output_hidden_states=True).hidden_states
    loss = sum((h * golden[f"probe.{i}"].double()).sum() for i, h in enumerate(hs))
    loss.backward()
    worst_h = max(
        ((h.float() - golden[f"hidden_states.{i}"]).abs().max() / h.abs().max()).item()
        for i, h in enumerate(hs)
    )
    # k_proj.bias has an exactly-zero true gradient (softmax ignores a per-row shift),
    # so its float32 value is pure rounding noise: floor the scale at 1e-3 * global max.
    grads = {n: p.grad for n, p in m64.named_parameters() if p.grad is not None}
    floor = 1e-3 * max(g.abs().max().item() for g in grads.values())
    worst_g = 0.0
    for name, g in grads.items():
        den = max(g.abs().max().item(), floor)
        err = (golden["grad." + name].double() - g).abs().max().item() / den
        worst_g = max(worst_g, err)
    rel_loss = abs(loss.item() - golden["loss"].item()) / abs(loss.item())
    return f"hidden {worst_h:.2e} grad {worst_g:.2e} loss {rel_loss:.2e}"


def stats(t):
    parts = []
    for k, v in t.items():
        if k.startswith(("hidden_states.", "input_values", "loss")):
            parts.append(f"{k}={v.float().abs().max().item():.3g}")
    g = max(v.abs().max().item() for k, v in t.items() if k.startswith("grad."))
    return " ".join(parts) + f" max|grad|={g:.3g}"


def make_model(name, overrides, spelling, seed, out_root):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = HubertModel(build_config(overrides))
    randomise(model, gen)
    model.eval()

    d = out_root / name
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    written = load_file(d / "model.safetensors")
    if spelling == "old":
        renamed = OrderedDict((file_name(k, "old"), v) for k, v in written.items())
        save_file(renamed, d / "model.safetensors", metadata={"format": "pt"})
        written = renamed
    assert "masked_spec_embed" in written
    n_params = sum(v.numel() for v in written.values())
    print(f"[{name}] {len(written)} tensors, {n_params} numbers, spelling={spelling}")

    # The saved directory must load back into transformers and give the same weights.
    reloaded = HubertModel.from_pretrained(d, attn_implementation="eager").eval()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), f"{name}: reload mismatch at {k1}"

    # Batch of 2: clip 1 is 777 samples then zero padding.
    agen = torch.Generator().manual_seed(seed + 1)
    x = torch.zeros(2, 1000)
    x[0] = make_audio(agen, 1000)
    x[1, :777] = make_audio(agen, 777)
    mask = torch.zeros(2, 1000, dtype=torch.long)
    mask[0, :] = 1
    mask[1, :777] = 1
    pgen = torch.Generator().manual_seed(seed + 2)
    batch = run_case(model, spelling, x, mask, pgen)
    save_file(batch, d / "golden_batch.safetensors")
    print(f"[{name}] batch  T={batch['hidden_states.0'].shape[1]} frame_lengths="
          f"{batch['frame_lengths'].tolist()} loss={batch['loss'].item():.6g}")
    print(f"[{name}] batch  {stats(batch)}")
    print(f"[{name}] batch  f32-vs-f64 rel err: "
          f"{f64_discrepancy(model, x, mask, as_torch_names(batch, spelling))}")

    x1 = make_audio(agen, 1234).unsqueeze(0)
    single = run_case(model, spelling, x1, None, pgen)
    save_file(single, d / "golden_single.safetensors")
    print(f"[{name}] single T={single['hidden_states.0'].shape[1]} loss={single['loss'].item():.6g}")
    print(f"[{name}] single {stats(single)}")
    print(f"[{name}] single f32-vs-f64 rel err: "
          f"{f64_discrepancy(model, x1, None, as_torch_names(single, spelling))}")

    # Every parameter has a grad tensor, named as in model.safetensors.
    for k, v in written.items():
        for g in (batch, single):
            assert g["grad." + k].shape == v.shape, k
    return d, written


def as_torch_names(golden, spelling):
    """Golden dict with grad names mapped back to torch's parametrization names."""
    if spelling != "old":
        return golden
    out = {}
    for k, v in golden.items():
        for new, old in zip(WN_NEW, WN_OLD):
            if k.endswith(old):
                k = k[: -len(old)] + new
        out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN)
    ap.add_argument("--extra", action="store_true", help="also write EXTRA_MODELS")
    ap.add_argument("--only", help="write only this model (any of MODELS or EXTRA_MODELS)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    # from_pretrained warns that weight_g/weight_v are "not used"; they ARE loaded (torch's
    # weight-norm compat pre-hook renames them) and make_model asserts the reload is exact.
    hf_logging.set_verbosity_error()
    models = dict(MODELS, **(EXTRA_MODELS if args.extra or args.only else {}))
    if args.only:
        models = {args.only: models[args.only]}
    for name, (overrides, spelling, seed) in models.items():
        d, written = make_model(name, overrides, spelling, seed, args.out)
        if name == "tiny_postln":
            # Same tensors (weight_g/weight_v spelling) as a torch zip pickle.
            b = args.out / "tiny_postln_bin"
            b.mkdir(parents=True, exist_ok=True)
            (b / "config.json").write_text((d / "config.json").read_text())
            torch.save(OrderedDict((k, v.clone()) for k, v in written.items()),
                       b / "pytorch_model.bin")
            back = torch.load(b / "pytorch_model.bin", weights_only=True)
            assert all(torch.equal(back[k], v) for k, v in written.items())
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()
                and p.parent.name in set(models) | {"tiny_postln_bin"})
    print(f"golden bytes written: {total}")
    cfg = json.loads((args.out / "tiny_postln" / "config.json").read_text())
    print("tiny_postln model_type:", cfg["model_type"])


if __name__ == "__main__":
    main()
