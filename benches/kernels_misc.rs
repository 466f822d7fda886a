//! Criterion benches of the memory-bound CUDA kernel families (norms, activations, dropout, AdamW,
//! reductions, layout, weight norm, casts, CQT) at MERT-v1-95M training shapes for one 4 x 5 s
//! micro-batch (1496 frames, hidden 768, FFN 3072, conv0 output 4 x 512 x 23999, 816 masked frames,
//! 95.5M parameters). Dense kernels are in `benches/kernels.rs`; rooflines in `benches/README.md`.
//!
//! On the GPU when `CudaDevice::driver(0)` works, otherwise on the host emulator with small shapes.
//! The device is synchronised inside every iteration. Throughput: `[bytes]` benches report the
//! minimum bytes moved (inputs read once, outputs written once, accumulated outputs read and written)
//! in decimal B/s, comparable with HBM bandwidth.

mod common;
use common::*;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use culturemert_raw::audio::cqt::CqtPlan;
use culturemert_raw::cuda::activation::{activation_backward, activation_forward};
use culturemert_raw::cuda::adamw::{adamw_step, AdamwScalars, AdamwTensor};
use culturemert_raw::cuda::cqt::CqtDevicePlan;
use culturemert_raw::cuda::tensor_core::{cast_to_half, HalfKind};
use culturemert_raw::cuda::{
    dropout, elementwise, gelu, group_norm, layer_norm, layout, reduce, weight_norm,
};
use culturemert_raw::device::{CudaDevice, DeviceBuffer};
use culturemert_raw::ops::activation::Activation;

/// Training shapes (GPU) or a small stand-in (emulator: each iteration under ~0.2 s; global_norm
/// runs max-tensor-length/256 blocks (at most 64) for every tensor, so the emulator's tensors stay small).
struct Shapes {
    batch: usize,
    frames: usize,
    hidden: usize,
    ffn: usize,
    conv: usize,
    /// Length of the first conv layer's output (GroupNorm + GELU run on [batch, conv, conv0_len]).
    conv0_len: usize,
    masked: usize,
    layers: usize,
    /// Positional conv weight v [pos_channels, pos_channels / 16, pos_kernel] (weight norm over dim 2).
    pos_channels: usize,
    pos_kernel: usize,
    codebooks: usize,
    codewords: usize,
    /// Outputs of the CQT prediction head (768 -> 336).
    cqt_bins: usize,
    /// CQT clips of `cqt_samples` samples.
    cqt_samples: usize,
}

const POS_GROUPS: usize = 16;

impl Shapes {
    fn new(emu: bool) -> Shapes {
        if emu {
            Shapes {
                batch: 2,
                frames: 45,
                hidden: 32,
                ffn: 128,
                conv: 12,
                conv0_len: 199,
                masked: 50,
                layers: 1,
                pos_channels: 32,
                pos_kernel: 8,
                codebooks: 2,
                codewords: 20,
                cqt_bins: 24,
                cqt_samples: 4800,
            }
        } else {
            Shapes {
                batch: 4,
                frames: 374,
                hidden: 768,
                ffn: 3072,
                conv: 512,
                conv0_len: 23_999,
                masked: 816,
                layers: 12,
                pos_channels: 768,
                pos_kernel: 128,
                codebooks: 8,
                codewords: 1024,
                cqt_bins: 336,
                cqt_samples: 120_000,
            }
        }
    }

    fn rows(&self) -> usize {
        self.batch * self.frames
    }

    /// Lengths of every trainable tensor of MERT-v1-95M plus the pre-training heads (final_proj 768 ->
    /// 8 x 64, codeword embeddings, CQT head 768 -> 336), in model order.
    fn parameter_lengths(&self) -> Vec<usize> {
        let (c, h, f) = (self.conv, self.hidden, self.ffn);
        let mut p = vec![c * 10, c, c]; // conv0, GroupNorm weight, bias
        p.extend([c * c * 3; 4]);
        p.extend([c * c * 2; 2]);
        p.extend([c, c, h * c, h, h]); // feature LayerNorm, projection, mask embedding
        let pc = self.pos_channels;
        p.extend([
            self.pos_kernel,
            pc * (pc / POS_GROUPS) * self.pos_kernel,
            pc,
        ]); // g, v, bias
        p.extend([h, h]); // encoder LayerNorm
        for _ in 0..self.layers {
            p.extend([
                h * h,
                h,
                h * h,
                h,
                h * h,
                h,
                h * h,
                h,
                h,
                h,
                f * h,
                f,
                h * f,
                h,
                h,
                h,
            ]);
        }
        let kd = self.codebooks * 64;
        p.extend([
            kd * h,
            kd,
            self.codebooks * self.codewords * 64,
            self.cqt_bins * h,
            self.cqt_bins,
        ]);
        p
    }
}

fn bench_norms(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "norms");
    let (r, h) = (s.rows(), s.hidden);
    let (x, dout, w, b) = (
        upload(dev, r * h),
        upload(dev, r * h),
        upload(dev, h),
        upload(dev, h),
    );
    let (mut out, mut dx, mut mean, mut rstd) = (
        zeros(dev, r * h),
        zeros(dev, r * h),
        zeros(dev, r),
        zeros(dev, r),
    );
    let (mut dw, mut db) = (zeros(dev, h), zeros(dev, h));
    let name = format!("layer_norm fwd {r}x{h} [bytes]");
    bench(&mut g, dev, name, floats(2 * r * h + 2 * r + 2 * h), || {
        layer_norm::layer_norm_forward(dev, &mut out, &mut mean, &mut rstd, &x, &w, &b, r, h, 1e-5)
            .unwrap()
    });
    layer_norm::layer_norm_forward(dev, &mut out, &mut mean, &mut rstd, &x, &w, &b, r, h, 1e-5)
        .unwrap();
    // Reads dout, x, weight, mean, rstd; dx, dweight, dbias accumulate (read + write).
    let name = format!("layer_norm bwd dx+dweight+dbias {r}x{h} [bytes]");
    bench(&mut g, dev, name, floats(4 * r * h + 2 * r + 5 * h), || {
        layer_norm::layer_norm_backward(
            dev,
            Some(&mut dx),
            Some(&mut dw),
            Some(&mut db),
            &dout,
            &x,
            &w,
            &mean,
            &rstd,
            r,
            h,
        )
        .unwrap()
    });
    // The split column reduction alone (dx not wanted): reads dout, x, mean, rstd.
    let name = format!("layer_norm bwd dweight+dbias {r}x{h} [bytes]");
    bench(&mut g, dev, name, floats(2 * r * h + 2 * r + 4 * h), || {
        layer_norm::layer_norm_backward(
            dev,
            None,
            Some(&mut dw),
            Some(&mut db),
            &dout,
            &x,
            &w,
            &mean,
            &rstd,
            r,
            h,
        )
        .unwrap()
    });

    // GroupNorm(512 groups, 512 channels) on the first conv layer's output.
    let (bt, ch, len) = (s.batch, s.conv, s.conv0_len);
    let n = bt * ch * len;
    let (x, dout, w, b) = (
        upload(dev, n),
        upload(dev, n),
        upload(dev, ch),
        upload(dev, ch),
    );
    let (mut out, mut dx) = (zeros(dev, n), zeros(dev, n));
    let (mut mean, mut rstd, mut dw, mut db) = (
        zeros(dev, bt * ch),
        zeros(dev, bt * ch),
        zeros(dev, ch),
        zeros(dev, ch),
    );
    let dims = format!("B{bt} C{ch} L{len} G{ch}");
    let name = format!("group_norm fwd {dims} [bytes]");
    bench(
        &mut g,
        dev,
        name,
        floats(2 * n + 2 * bt * ch + 2 * ch),
        || {
            group_norm::group_norm_forward(
                dev, &mut out, &mut mean, &mut rstd, &x, &w, &b, bt, ch, len, ch, 1e-5,
            )
            .unwrap()
        },
    );
    let name = format!("group_norm bwd dx+dweight+dbias {dims} [bytes]");
    bench(
        &mut g,
        dev,
        name,
        floats(4 * n + 2 * bt * ch + 5 * ch),
        || {
            group_norm::group_norm_backward(
                dev,
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
                &dout,
                &x,
                &w,
                &mean,
                &rstd,
                bt,
                ch,
                len,
                ch,
            )
            .unwrap()
        },
    );

    // Weight norm of the positional conv, v [768, 48, 128] over dim 2 (the strided-column layout).
    let dims = [s.pos_channels, s.pos_channels / POS_GROUPS, s.pos_kernel];
    let n = dims.iter().product::<usize>();
    let (v, gain, dwn) = (upload(dev, n), upload(dev, s.pos_kernel), upload(dev, n));
    let (mut w, mut dv) = (zeros(dev, n), zeros(dev, n));
    let (mut norms, mut dg) = (zeros(dev, s.pos_kernel), zeros(dev, s.pos_kernel));
    let k = s.pos_kernel;
    let name = format!("weight_norm fwd {dims:?} dim 2 [bytes]");
    bench(&mut g, dev, name, floats(2 * n + 2 * k), || {
        weight_norm::weight_norm_forward(dev, &mut w, &mut norms, &gain, &v, dims, 2).unwrap()
    });
    let name = format!("weight_norm bwd {dims:?} dim 2 [bytes]");
    bench(&mut g, dev, name, floats(4 * n + 4 * k), || {
        weight_norm::weight_norm_backward(
            dev,
            Some(&mut dg),
            Some(&mut dv),
            &dwn,
            &gain,
            &v,
            &norms,
            dims,
            2,
        )
        .unwrap()
    });
    g.finish();
}

fn bench_elementwise(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "elementwise");
    // GELU on the FFN hidden activations and on the first conv layer's output.
    for (what, n) in [
        ("ffn", s.rows() * s.ffn),
        ("conv0", s.batch * s.conv * s.conv0_len),
    ] {
        let (x, dout) = (upload(dev, n), upload(dev, n));
        let (mut out, mut dx) = (zeros(dev, n), zeros(dev, n));
        bench(
            &mut g,
            dev,
            format!("gelu fwd {what} {n} [bytes]"),
            floats(2 * n),
            || gelu::gelu_forward(dev, &mut out, &x).unwrap(),
        );
        bench(
            &mut g,
            dev,
            format!("gelu bwd {what} {n} [bytes]"),
            floats(4 * n),
            || gelu::gelu_backward(dev, &mut dx, &dout, &x).unwrap(),
        );
    }
    // ReLU (a config's `hidden_act = "relu"`) on the FFN hidden activations: the streaming floor.
    let n = s.rows() * s.ffn;
    let (x, dout) = (upload(dev, n), upload(dev, n));
    let (mut out, mut dx) = (zeros(dev, n), zeros(dev, n));
    bench(
        &mut g,
        dev,
        format!("relu fwd ffn {n} [bytes]"),
        floats(2 * n),
        || activation_forward(dev, Activation::Relu, &mut out, &x).unwrap(),
    );
    bench(
        &mut g,
        dev,
        format!("relu bwd ffn {n} [bytes]"),
        floats(4 * n),
        || activation_backward(dev, Activation::Relu, &mut dx, &dout, &x).unwrap(),
    );
    let n = s.rows() * s.hidden;
    let (x, y) = (upload(dev, n), upload(dev, n));
    let (mut out, mut dx) = (zeros(dev, n), zeros(dev, n));
    bench(
        &mut g,
        dev,
        format!("add (residual) {n} [bytes]"),
        floats(3 * n),
        || elementwise::add(dev, &mut out, &x, &y).unwrap(),
    );
    bench(
        &mut g,
        dev,
        format!("dropout fwd p0.1 {n} [bytes]"),
        floats(2 * n),
        || dropout::dropout_forward(dev, &mut out, &x, n, 0.1, 11).unwrap(),
    );
    bench(
        &mut g,
        dev,
        format!("dropout bwd p0.1 {n} [bytes]"),
        floats(3 * n),
        || dropout::dropout_backward(dev, &mut dx, &y, n, 0.1, 11).unwrap(),
    );
    // The f32 -> bf16 cast in front of every tensor-core GEMM (4 bytes read, 2 written per value).
    let n = s.rows() * s.ffn;
    let x = upload(dev, n);
    let mut h = dev.alloc_zeros::<u16>(n).unwrap();
    let name = format!("cast f32->bf16 ffn {n} [bytes]");
    bench(
        &mut g,
        dev,
        name,
        Throughput::BytesDecimal(6 * n as u64),
        || cast_to_half(dev, HalfKind::Bf16, &mut h, &x).unwrap(),
    );
    g.finish();
}

fn bench_optimizer(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "optimizer");
    let lens = s.parameter_lengths();
    let total: usize = lens.iter().sum();
    let grads: Vec<DeviceBuffer<f32>> = lens.iter().map(|&n| upload(dev, n)).collect();
    let mut params: Vec<DeviceBuffer<f32>> = lens.iter().map(|&n| upload(dev, n)).collect();
    let mut m: Vec<DeviceBuffer<f32>> = lens.iter().map(|&n| zeros(dev, n)).collect();
    let mut v: Vec<DeviceBuffer<f32>> = lens.iter().map(|&n| zeros(dev, n)).collect();
    let scalars = AdamwScalars::new(5e-4, (0.9, 0.98), 1e-6, 0.01, 1);
    let tensors = lens.len();
    // Reads p, g, m, v; writes p, m, v.
    let name = format!("adamw {total} params in {tensors} tensors [bytes]");
    bench(&mut g, dev, name, floats(7 * total), || {
        let mut ts: Vec<AdamwTensor<'_>> = params
            .iter_mut()
            .zip(&grads)
            .zip(m.iter_mut().zip(v.iter_mut()))
            .map(|((param, grad), (exp_avg, exp_avg_sq))| AdamwTensor {
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                scalars,
            })
            .collect();
        adamw_step(dev, &mut ts).unwrap()
    });
    let refs: Vec<&DeviceBuffer<f32>> = grads.iter().collect();
    let mut norm = zeros(dev, 1);
    let name = format!("global_norm {total} values in {tensors} tensors [bytes]");
    bench(&mut g, dev, name, floats(total), || {
        reduce::global_norm_into(dev, &refs, &mut norm).unwrap()
    });
    // dbias of the FFN up projection and of the hidden-size projections: column sums of dout
    // [rows, 3072] and [rows, 768].
    for f in [s.ffn, s.hidden] {
        let r = s.rows();
        let x = upload(dev, r * f);
        let mut out = zeros(dev, f);
        let name = format!("column_sum {r}x{f} accumulate [bytes]");
        bench(&mut g, dev, name, floats(r * f + 2 * f), || {
            reduce::column_sum(dev, &mut out, &x, r, f, true).unwrap()
        });
    }
    g.finish();
}

fn bench_layout(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "layout");
    // Conv features [B, 512, T] -> [B, T, 512], and the positional conv's [B, T, 768] -> [B, 768, T].
    for (rows, cols) in [(s.conv, s.frames), (s.frames, s.hidden)] {
        let n = s.batch * rows * cols;
        let x = upload(dev, n);
        let mut out = zeros(dev, n);
        let name = format!("transpose_last2 {}x{rows}x{cols} [bytes]", s.batch);
        bench(&mut g, dev, name, floats(2 * n), || {
            layout::transpose_last2(dev, &mut out, &x, s.batch, rows, cols, false).unwrap()
        });
    }
    // The masked frames of the encoder output (sorted indices, ~54% of the rows).
    let (r, h, n) = (s.rows(), s.hidden, s.masked);
    let index: Vec<i32> = (0..n).map(|i| (i * r / n) as i32).collect();
    let index = dev.htod(&index).unwrap();
    let (x, dsel) = (upload(dev, r * h), upload(dev, n * h));
    let (mut sel, mut dx) = (zeros(dev, n * h), zeros(dev, r * h));
    let name = format!("gather_rows {n} of {r}x{h} [bytes]");
    bench(&mut g, dev, name, floats(2 * n * h + n), || {
        layout::gather_rows(dev, &mut sel, &x, &index, r, h).unwrap()
    });
    let name = format!("gather_rows bwd {n} of {r}x{h} [bytes]");
    bench(&mut g, dev, name, floats(3 * n * h + n), || {
        layout::gather_rows_backward(dev, &mut dx, &dsel, &index, r, h).unwrap()
    });
    g.finish();
}

fn bench_cqt(c: &mut Criterion, dev: &CudaDevice, s: &Shapes) {
    let mut g = group(c, dev.is_emulated(), "cqt");
    // The emulator gets a short-kernel plan (fmin 1 kHz: block 512 instead of 131072).
    let plan = if dev.is_emulated() {
        CqtPlan::new(24000, 320, 1000.0, 24, 12).unwrap()
    } else {
        CqtPlan::mert()
    };
    let dplan = CqtDevicePlan::new(dev, &plan).unwrap();
    let (b, len) = (s.batch, s.cqt_samples);
    let audio = upload(dev, b * len);
    let out_n = b * dplan.n_frames(len) * dplan.n_bins();
    // Minimum: audio and the sparse kernel bands (8-byte complex) read once, magnitudes written once.
    let bytes = 4 * (b * len + out_n) + 8 * plan.stored_coefficients();
    let name = format!(
        "cqt fwd {b} x {len} samples, {} bins, block {} [bytes]",
        dplan.n_bins(),
        plan.block_len()
    );
    bench(
        &mut g,
        dev,
        name,
        Throughput::BytesDecimal(bytes as u64),
        || drop(dplan.forward(dev, &audio, b, len).unwrap()),
    );
    g.finish();
}

fn benches(c: &mut Criterion) {
    let dev = device();
    let s = Shapes::new(dev.is_emulated());
    bench_norms(c, &dev, &s);
    bench_elementwise(c, &dev, &s);
    bench_optimizer(c, &dev, &s);
    bench_layout(c, &dev, &s);
    bench_cqt(c, &dev, &s);
}

criterion_group! {
    name = kernel_misc_benches;
    config = common::config();
    targets = benches
}
criterion_main!(kernel_misc_benches);
