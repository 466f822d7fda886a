"""Vendor yardsticks for the kernel benches: cuBLAS GEMMs, cuDNN convolutions and sdpa attention through
PyTorch on a GPU, at the shapes of `benches/kernels.rs` (one MERT-v1-95M micro-batch, 4 x 5 s), and one
table against our criterion times: kernel, shape, ours, vendor, ours / vendor, roofline bound.

    python reference/bench_vendor.py [--ours CRITERION_OUTPUT.txt] [--gpu h200] [--runs 20]

--ours: the text output of `benches/kernels --bench ...` (or `cargo bench --bench kernels`); without it
only the vendor column is printed. Vendor times: CUDA events, median of --runs after 3 warm-ups,
cudnn.benchmark on, TF32 off (strict f32 like ours). The bound is max(FLOPs / peak, bytes / bandwidth)
with the datasheet peaks of src/device/roofline.rs (dense bf16, f32 CUDA cores, HBM).
"""

import argparse
import re
import statistics

import torch
import torch.nn.functional as F

PEAKS = {  # dense bf16 tensor FLOP/s, f32 FLOP/s, bytes/s (src/device/roofline.rs)
    "h100": (989.4e12, 66.9e12, 3.35e12),
    "h200": (989.4e12, 66.9e12, 4.8e12),
    "a100": (312e12, 19.5e12, 2.039e12),
}
B, SAMPLES, T, HID, FFN, HEADS, HD, CONV = 4, 120_000, 374, 768, 3072, 12, 64, 512


def cuda_time(fn, runs):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)  # us
    return statistics.median(times)


def gemm_cases(dtype, tag):
    r = B * T
    out = []
    for what, m, n, k, at, bt in [("ffn_up fwd nt", r, FFN, HID, False, True),
                                  ("ffn_up dx nn", r, HID, FFN, False, False),
                                  ("ffn_up dw tn", FFN, HID, r, True, False)]:
        a = torch.randn((k, m) if at else (m, k), device="cuda", dtype=dtype)
        b = torch.randn((n, k) if bt else (k, n), device="cuda", dtype=dtype)
        opa = a.t() if at else a
        opb = b.t() if bt else b
        half = dtype != torch.float32
        name = (f"gemm_tc Bf16 {what} {m}x{n}x{k} [FLOP]" if half else f"sgemm {what} {m}x{n}x{k} [FLOP]")
        ab = 2 if half else 4
        out.append((f"{tag}/{name}", lambda opa=opa, opb=opb: opa @ opb, 2.0 * m * n * k,
                    ab * (m * k + k * n) + 4 * m * n, half))
    return out


def conv_cases():
    l0 = (SAMPLES - 10) // 5 + 1
    l1 = (l0 - 3) // 2 + 1
    shapes = [("conv0", 1, CONV, 10, 5, 0, 1, SAMPLES), ("conv1", CONV, CONV, 3, 2, 0, 1, l0),
              ("pos_conv", HID, HID, 128, 1, 64, 16, T)]
    out = []
    for what, cin, cout, k, s, p, g, lin in shapes:
        lout = (lin + 2 * p - k) // s + 1
        x = torch.randn(B, cin, lin, device="cuda")
        w = torch.randn(cout, cin // g, k, device="cuda")
        dy = torch.randn(B, cout, lout, device="cuda")
        dims = f"B{B} {cin}->{cout} k{k} s{s} g{g} Lin{lin} Lout{lout}"
        flops = 2.0 * B * cout * lout * (cin // g) * k
        nbytes = 4 * (B * cin * lin + cout * (cin // g) * k + B * cout * lout)
        fwd = lambda x=x, w=w, s=s, p=p, g=g: F.conv1d(x, w, stride=s, padding=p, groups=g)
        dx = lambda x=x, w=w, dy=dy, s=s, p=p, g=g: torch.nn.grad.conv1d_input(
            x.shape, w, dy, stride=s, padding=p, groups=g)
        dw = lambda x=x, w=w, dy=dy, s=s, p=p, g=g: torch.nn.grad.conv1d_weight(
            x, w.shape, dy, stride=s, padding=p, groups=g)
        for d, fn in [("fwd", fwd), ("bwd dx", dx), ("bwd dweight", dw)]:
            out.append((f"conv1d/{what} {d} {dims} [FLOP]", fn, flops, nbytes, False))
    return out


def attention_cases():
    out = []
    dims = f"B{B} T{T} H{HEADS} D{HD} dropout 0.1"
    prod = 2.0 * B * HEADS * T * T * HD
    for dtype, label in [(torch.float32, "attention"), (torch.bfloat16, "attention_tc Bf16")]:
        q, k, v = (torch.randn(B, HEADS, T, HD, device="cuda", dtype=dtype, requires_grad=True)
                   for _ in range(3))
        ab = 4 if dtype == torch.float32 else 2
        nbytes = 4 * ab * B * T * HEADS * HD
        fwd = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
        o = fwd()
        go = torch.randn_like(o)

        def bwd(q=q, k=k, v=v, o=o, go=go):
            torch.autograd.grad(o, (q, k, v), go, retain_graph=True)
        half = dtype != torch.float32
        out.append((f"attention/{label} fwd {dims} [FLOP]", fwd, 2 * prod, nbytes, half))
        out.append((f"attention/{label} bwd {dims} [FLOP, 5 matmuls]", bwd, 5 * prod, 2 * nbytes, half))
    return out


def parse_criterion(path):
    """{'gemm_f32/sgemm ... [FLOP]': median us} from criterion's text output."""
    unit = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
    times, name = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^kernels/cuda/(.+?\])", line.strip())
        if m:
            name = m.group(1)
        t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if t and name:
            times[name] = float(t.group(1)) * unit[t.group(2)]
            name = None
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", help="criterion text output of benches/kernels on the same GPU")
    ap.add_argument("--gpu", default=None, help="h100 | h200 | a100 (default: from the device name)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    gpu = args.gpu or next((g for g in PEAKS if g in name.lower()), "h100")
    tc_peak, f32_peak, bw = PEAKS[gpu]
    ours = parse_criterion(args.ours) if args.ours else {}
    cases = (gemm_cases(torch.float32, "gemm_f32") + gemm_cases(torch.bfloat16, "gemm_tc")
             + conv_cases() + attention_cases())
    print(f"vendor yardsticks on {name} (torch {torch.__version__}), bound with {gpu.upper()} peaks")
    print(f"| kernel | ours us | vendor us | ours / vendor | bound us | vendor TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for key, fn, flops, nbytes, half in cases:
        vendor = cuda_time(fn, args.runs)
        bound = max(flops / (tc_peak if half else f32_peak), nbytes / bw) * 1e6
        mine = ours.get(key)
        ratio = f"{mine / vendor:.2f}" if mine else "?"
        print(f"| {key} | {mine:.1f} | {vendor:.1f} | {ratio} | {bound:.1f} | {flops / vendor / 1e6:.1f} |"
              if mine else f"| {key} | ? | {vendor:.1f} | ? | {bound:.1f} | {flops / vendor / 1e6:.1f} |")


if __name__ == "__main__":
    main()
