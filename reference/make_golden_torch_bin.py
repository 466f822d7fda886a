"""Golden files for the pytorch_model.bin reader (src/model/torch_bin.rs, tests/torch_bin.rs).

Run: python reference/make_golden_torch_bin.py
Writes reference/golden/torch_bin/:
  pytorch_model.bin   torch.save of a module state_dict (OrderedDict with `_metadata`, as
                      transformers' save_pretrained writes) plus extra entries covering every
                      dtype, a transposed (non-contiguous) view, views with storage offsets,
                      storages shared between entries, a 0-dim and an empty tensor.
  truth.safetensors   the same tensors made contiguous; metadata "order" = the .bin's key order.
  legacy.bin          the pre-1.6 (non-zip) format, which the reader must reject clearly.
  bad_global.bin      a zip checkpoint holding a fractions.Fraction (an unsupported global).
  bad_entry.bin       a zip checkpoint whose entry "step" is an int, not a tensor.
"""
import fractions
from pathlib import Path

import torch
from safetensors.torch import save_file

out = Path(__file__).resolve().parent / "golden" / "torch_bin"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

# A module tree with legacy weight norm (weight_g / weight_v), LayerNorm and a buffer, like MERT.
model = torch.nn.Sequential(
    torch.nn.utils.weight_norm(torch.nn.Conv1d(3, 5, kernel_size=4, groups=1), dim=2),
    torch.nn.LayerNorm(5),
    torch.nn.Linear(5, 7),
    torch.nn.BatchNorm1d(7),
)
sd = model.state_dict()  # OrderedDict with a `_metadata` attribute (pickled through BUILD)
assert hasattr(sd, "_metadata")

base = torch.arange(60, dtype=torch.float32).reshape(6, 10) / 7.0 - 3.0
sd["extra.transposed"] = base.t()  # non-contiguous, shares storage with the next two
sd["extra.row_view"] = base[2]  # storage offset 20
sd["extra.block_view"] = base[1:4, 3:8]  # offset 13, strides (10, 1), non-contiguous
sd["extra.step_view"] = base[::2, 1::3]  # strides (20, 3)
sd["extra.f16"] = (torch.randn(3, 5) * 4).half()
sd["extra.bf16"] = (torch.randn(2, 3, 3) * 100).bfloat16()
sd["extra.bf16_t"] = sd["extra.bf16"].permute(2, 0, 1)  # permuted view of a bf16 storage
sd["extra.i64"] = torch.tensor([[-(2**40), 0, 2**62 - 1], [5, -7, 123456789012]], dtype=torch.int64)
sd["extra.i32"] = torch.tensor([-(2**31), 17, 2**31 - 1, -3], dtype=torch.int32)
sd["extra.f64"] = torch.randn(4, dtype=torch.float64)
sd["extra.u8"] = torch.tensor([0, 1, 200, 255], dtype=torch.uint8)
sd["extra.bool"] = torch.tensor([True, False, True])
sd["extra.scalar"] = torch.tensor(2.5)
sd["extra.empty"] = torch.zeros(0, 3)
sd["extra.shared_again"] = sd["extra.f16"]  # same tensor under a second name
big = torch.randn(300)  # > 256 distinct memo ids in the pickle -> LONG_BINPUT/LONG_BINGET
for i in range(40):
    sd[f"many.{i}"] = big[i * 7 : i * 7 + 5 + (i % 3)]

torch.save(sd, out / "pytorch_model.bin")
truth = {k: v.detach().clone().contiguous() for k, v in sd.items()}
save_file(truth, out / "truth.safetensors", metadata={"order": ",".join(sd.keys())})

back = torch.load(out / "pytorch_model.bin", weights_only=True)
assert list(back.keys()) == list(sd.keys())
assert all(torch.equal(back[k], truth[k]) for k in sd)

small = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
torch.save(small, out / "legacy.bin", _use_new_zipfile_serialization=False)
torch.save({"w": small["w"], "frac": fractions.Fraction(1, 3)}, out / "bad_global.bin")
torch.save({"w": small["w"], "step": 7}, out / "bad_entry.bin")
for p in sorted(out.iterdir()):
    print(p.name, p.stat().st_size)
