//! Criterion benches of the dense CUDA kernels (f32 SIMT GEMM, bf16/f16 tensor-core GEMM, direct conv1d,
//! fused attention, fused NCE loss) at MERT-v1-95M training shapes for one 4 x 5 s micro-batch (T = 374
//! frames per clip, hidden 768, FFN 3072, conv channels 512, 816 masked frames). The other kernel families
//! are in `benches/kernels_misc.rs`; napkin rooflines in `benches/README.md`.
//!
//! On the GPU when `CudaDevice::driver(0)` works, otherwise on the host emulator with small shapes (which
//! measures the emulator, not the kernel). The device is synchronised inside every iteration, before the
//! clock stops. Throughput: `[FLOP]` benches report elem/s = FLOP/s (and the minimum bytes moved as B/s).

mod common;
use common::*;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use culturemert_raw::cuda::tensor_core::{cast_to_half, gemm_tc, HalfKind};
use culturemert_raw::cuda::{attention, attention_tc, conv1d, gemm, nce_loss};
use culturemert_raw::device::{CudaDevice, DeviceBuffer};
use culturemert_raw::ops::attention::{AttentionDropout, AttentionShape};
use culturemert_raw::ops::conv1d::Conv1dShape;
use culturemert_raw::ops::nce_loss::NceShape;

/// The shapes of one training micro-batch (GPU) or a small stand-in (emulator: each iteration under
/// ~0.2 s; conv dweight (one block per weight) and the emulated mma are the slow ones there).
struct Shapes {
    batch: usize,
    samples: usize,
    frames: usize,
    hidden: usize,
    ffn: usize,
    heads: usize,
    head_dim: usize,
    conv: usize,
    pos_channels: usize,
    pos_kernel: usize,
    pos_groups: usize,
    masked: usize,
    codebooks: usize,
    codewords: usize,
    code_dim: usize,
}

impl Shapes {
    fn new(emu: bool) -> Shapes {
        if emu {
            Shapes {
                batch: 2,
                samples: 1000,
                frames: 45,
                hidden: 64,
                ffn: 256,
                heads: 1,
                head_dim: 64,
                conv: 12,
                pos_channels: 32,
                pos_kernel: 4,
                pos_groups: 16,
                masked: 50,
                codebooks: 2,
                codewords: 70,
                code_dim: 64,
            }
        } else {
            Shapes {
                batch: 4,
                samples: 120_000,
                frames: 374,
                hidden: 768,
                ffn: 3072,
                heads: 12,
                head_dim: 64,
                conv: 512,
                pos_channels: 768,
                pos_kernel: 128,
                pos_groups: 16,
                masked: 816,
                codebooks: 8,
                codewords: 1024,
                code_dim: 64,
            }
        }
    }

    fn rows(&self) -> usize {
        self.batch * self.frames
    }
}

/// The three GEMMs of nn.Linear 768 -> 3072 (FFN up): forward (nt), dX (nn), dW (tn).
fn linear_gemms(s: &Shapes) -> [(&'static str, usize, usize, usize, bool, bool); 3] {
    let (r, i, o) = (s.rows(), s.hidden, s.ffn);
    [
        ("ffn_up fwd nt", r, o, i, false, true),
        ("ffn_up dx nn", r, i, o, false, false),
        ("ffn_up dw tn", o, i, r, true, false),
    ]
}

fn bench_gemm(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "gemm_f32");
    for (what, m, n, k, at, bt) in linear_gemms(s) {
        let (a, b, mut out) = (upload(dev, m * k), upload(dev, k * n), zeros(dev, m * n));
        // Backward GEMMs accumulate (C read and written), as in `linear_backward`.
        let acc = !bt;
        let floats = m * k + k * n + m * n * (1 + acc as usize);
        let name = format!("sgemm {what} {m}x{n}x{k} [FLOP]");
        bench(&mut g, dev, name, flops(2 * m * n * k, floats), || {
            gemm::sgemm(dev, m, n, k, &a, at, &b, bt, None, &mut out, acc).unwrap()
        });
    }
    g.finish();
}

fn bench_gemm_tc(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "gemm_tc");
    for kind in [HalfKind::Bf16, HalfKind::F16] {
        let bits = |n: usize| -> DeviceBuffer<u16> {
            let v: Vec<u16> = match kind {
                HalfKind::Bf16 => values(n)
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_bits())
                    .collect(),
                HalfKind::F16 => values(n)
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_bits())
                    .collect(),
            };
            dev.htod(&v).unwrap()
        };
        for (what, m, n, k, at, bt) in linear_gemms(s) {
            let (a, b, mut out) = (bits(m * k), bits(k * n), zeros(dev, m * n));
            let acc = !bt;
            // Inputs are 16-bit (2 bytes), C is f32 (read too when accumulating).
            let tp = Throughput::ElementsAndBytes {
                elements: (2 * m * n * k) as u64,
                bytes: (2 * (m * k + k * n) + 4 * m * n * (1 + acc as usize)) as u64,
            };
            let name = format!("gemm_tc {kind:?} {what} {m}x{n}x{k} [FLOP]");
            bench(&mut g, dev, name, tp, || {
                gemm_tc(dev, kind, m, n, k, &a, at, &b, bt, &mut out, None, acc).unwrap()
            });
        }
    }
    g.finish();
}

/// The MERT conv layers: conv0 (1 -> C, k10 s5), conv1 (C -> C, k3 s2), positional conv (grouped).
fn conv_shapes(s: &Shapes) -> [(&'static str, Conv1dShape); 3] {
    let conv0 = Conv1dShape {
        batch: s.batch,
        in_channels: 1,
        out_channels: s.conv,
        in_len: s.samples,
        kernel: 10,
        stride: 5,
        padding: 0,
        groups: 1,
    };
    let conv1 = Conv1dShape {
        in_channels: s.conv,
        in_len: conv0.out_len(),
        kernel: 3,
        stride: 2,
        ..conv0
    };
    let pos = Conv1dShape {
        batch: s.batch,
        in_channels: s.pos_channels,
        out_channels: s.pos_channels,
        in_len: s.frames,
        kernel: s.pos_kernel,
        stride: 1,
        padding: s.pos_kernel / 2,
        groups: s.pos_groups,
    };
    [("conv0", conv0), ("conv1", conv1), ("pos_conv", pos)]
}

fn bench_conv(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "conv1d");
    for (what, sh) in conv_shapes(s) {
        let nx = sh.batch * sh.in_channels * sh.in_len;
        let nw = sh.out_channels * (sh.in_channels / sh.groups) * sh.kernel;
        let no = sh.batch * sh.out_channels * sh.out_len();
        let macs = no * (sh.in_channels / sh.groups) * sh.kernel;
        let (x, w, dout) = (upload(dev, nx), upload(dev, nw), upload(dev, no));
        let (mut out, mut dx, mut dw) = (zeros(dev, no), zeros(dev, nx), zeros(dev, nw));
        let dims = format!(
            "B{} {}->{} k{} s{} g{} Lin{} Lout{}",
            sh.batch,
            sh.in_channels,
            sh.out_channels,
            sh.kernel,
            sh.stride,
            sh.groups,
            sh.in_len,
            sh.out_len()
        );
        let name = format!("{what} fwd {dims} [FLOP]");
        bench(&mut g, dev, name, flops(2 * macs, nx + nw + no), || {
            conv1d::conv1d_forward(dev, &mut out, &x, &w, None, &sh).unwrap()
        });
        let name = format!("{what} bwd dx {dims} [FLOP]");
        bench(&mut g, dev, name, flops(2 * macs, no + nw + nx), || {
            conv1d::conv1d_backward(dev, Some(&mut dx), None, None, &dout, &x, &w, &sh).unwrap()
        });
        let name = format!("{what} bwd dweight {dims} [FLOP]");
        bench(&mut g, dev, name, flops(2 * macs, no + nx + nw), || {
            conv1d::conv1d_backward(dev, None, Some(&mut dw), None, &dout, &x, &w, &sh).unwrap()
        });
        let mut db = zeros(dev, sh.out_channels);
        let name = format!("{what} bwd dbias {dims} [bytes]");
        bench(&mut g, dev, name, floats(no + 2 * sh.out_channels), || {
            conv1d::conv1d_backward(dev, None, None, Some(&mut db), &dout, &x, &w, &sh).unwrap()
        });
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "attention");
    let sh = AttentionShape {
        batch: s.batch,
        seq: s.frames,
        heads: s.heads,
        head_dim: s.head_dim,
    };
    let n = sh.batch * sh.seq * sh.heads * sh.head_dim;
    let rows = sh.batch * sh.heads * sh.seq;
    let (q, k, v, dout) = (
        upload(dev, n),
        upload(dev, n),
        upload(dev, n),
        upload(dev, n),
    );
    let (mut out, mut lse, mut delta) = (zeros(dev, n), zeros(dev, rows), zeros(dev, rows));
    let (mut dq, mut dk, mut dv) = (zeros(dev, n), zeros(dev, n), zeros(dev, n));
    let scale = 1.0 / (sh.head_dim as f32).sqrt();
    let drop = Some(AttentionDropout { p: 0.1, seed: 7 });
    // One T x T x D matmul per head: 2 T^2 D FLOPs; forward needs 2 of them, backward at least 5.
    let matmul = 2 * sh.batch * sh.heads * sh.seq * sh.seq * sh.head_dim;
    let dims = format!(
        "B{} T{} H{} D{} dropout 0.1",
        sh.batch, sh.seq, sh.heads, sh.head_dim
    );
    let name = format!("attention fwd {dims} [FLOP]");
    bench(&mut g, dev, name, flops(2 * matmul, 4 * n + rows), || {
        attention::attention_forward(dev, &mut out, &mut lse, &q, &k, &v, None, &sh, scale, drop)
            .unwrap()
    });
    // Reads dout, q, k, v, out, lse; dq, dk, dv accumulate (read + write).
    let name = format!("attention bwd {dims} [FLOP, 5 matmuls]");
    bench(&mut g, dev, name, flops(5 * matmul, 11 * n + rows), || {
        attention::attention_backward(
            dev, &mut dq, &mut dk, &mut dv, &mut delta, &dout, &q, &k, &v, &out, &lse, None, &sh,
            scale, drop,
        )
        .unwrap()
    });

    // The tensor-core kernels (bf16 q/k/v, f32 out, lse and gradients).
    let half = |x: &DeviceBuffer<f32>| -> DeviceBuffer<u16> {
        let mut h = dev.alloc_zeros::<u16>(x.len()).unwrap();
        cast_to_half(dev, HalfKind::Bf16, &mut h, x).unwrap();
        h
    };
    let (qh, kh, vh) = (half(&q), half(&k), half(&v));
    // Bytes: bf16 q, k, v (half a float each), f32 out and lse.
    let name = format!("attention_tc Bf16 fwd {dims} [FLOP]");
    bench(
        &mut g,
        dev,
        name,
        flops(2 * matmul, 5 * n / 2 + rows),
        || {
            attention_tc::attention_tc_forward(
                dev,
                HalfKind::Bf16,
                &mut out,
                &mut lse,
                &qh,
                &kh,
                &vh,
                None,
                &sh,
                scale,
                drop,
            )
            .unwrap()
        },
    );
    // Bytes: bf16 q, k, v (half a float each), f32 dout, out, lse; dq, dk, dv accumulate.
    let name = format!("attention_tc Bf16 bwd {dims} [FLOP, 5 matmuls]");
    let floats = 2 * n + 3 * n / 2 + 6 * n + rows;
    bench(&mut g, dev, name, flops(5 * matmul, floats), || {
        attention_tc::attention_tc_backward(
            dev,
            HalfKind::Bf16,
            &mut dq,
            &mut dk,
            &mut dv,
            &mut delta,
            &dout,
            &qh,
            &kh,
            &vh,
            &out,
            &lse,
            None,
            &sh,
            scale,
            drop,
        )
        .unwrap()
    });
    g.finish();
}

fn bench_nce(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "nce_loss");
    let sh = NceShape {
        rows: s.masked,
        codebooks: s.codebooks,
        codewords: s.codewords,
        dim: s.code_dim,
    };
    let (n, k, cw, d) = (sh.rows, sh.codebooks, sh.codewords, sh.dim);
    let (pred, emb) = (upload(dev, n * k * d), upload(dev, k * cw * d));
    let targets: Vec<i32> = (0..n * k).map(|i| ((i * 37) % cw) as i32).collect();
    let targets = dev.htod(&targets).unwrap();
    let (mut loss, mut lse) = (zeros(dev, n * k), zeros(dev, n * k));
    let mut correct = dev.alloc_zeros::<i32>(n * k).unwrap();
    let (mut dpred, mut demb) = (zeros(dev, n * k * d), zeros(dev, k * cw * d));
    // Logits: one d-long dot product per (row, codebook, codeword).
    let logits = 2 * n * k * cw * d;
    let dims = format!("N{n} K{k} C{cw} D{d}");
    let name = format!("nce fwd {dims} [FLOP]");
    bench(
        &mut g,
        dev,
        name,
        flops(logits, n * k * d + k * cw * d + 3 * n * k),
        || {
            nce_loss::nce_loss_forward(
                dev,
                &mut loss,
                &mut correct,
                &mut lse,
                &pred,
                &emb,
                &targets,
                &sh,
                0.1,
            )
            .unwrap()
        },
    );
    // Backward: logits recomputed, dpred and dcodewords: 3 dot products per (row, codebook, codeword).
    let name = format!("nce bwd {dims} [FLOP]");
    // Reads pred, codewords, targets, lse; dpred and dcodewords accumulate (read + write).
    let floats = 3 * (n * k * d + k * cw * d) + 2 * n * k;
    bench(&mut g, dev, name, flops(3 * logits, floats), || {
        nce_loss::nce_loss_backward(
            dev,
            Some(&mut dpred),
            Some(&mut demb),
            1.0,
            &pred,
            &emb,
            &targets,
            &lse,
            &sh,
            0.1,
        )
        .unwrap()
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let dev = device();
    let s = Shapes::new(dev.is_emulated());
    bench_gemm(c, &dev, &s);
    bench_gemm_tc(c, &dev, &s);
    bench_conv(c, &dev, &s);
    bench_attention(c, &dev, &s);
    bench_nce(c, &dev, &s);
}

criterion_group! {
    name = kernel_benches;
    config = common::config();
    targets = benches
}
criterion_main!(kernel_benches);
