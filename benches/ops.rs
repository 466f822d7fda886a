//! CPU op benchmarks at MERT-v1-95M shapes (5 s clip at 24 kHz, T = 374 frames).
//! `cargo bench --bench ops`; throughput is reported in FLOP/s (criterion's "elem/s").

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use culturemert_raw::ops::attention::{attention_backward, attention_forward, AttentionShape};
use culturemert_raw::ops::conv1d::{conv1d_backward, conv1d_forward, Conv1dShape};
use culturemert_raw::ops::gelu::gelu_forward;
use culturemert_raw::ops::gemm::{set_num_threads, sgemm};
use culturemert_raw::ops::layer_norm::layer_norm_forward;
use culturemert_raw::ops::linear::linear_forward;
use std::hint::black_box;
use std::time::Duration;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

fn bench_sgemm(c: &mut Criterion) {
    let n = 1024;
    let (a, b) = (data(n * n, 1), data(n * n, 2));
    let mut out = vec![0.0f32; n * n];
    let mut g = c.benchmark_group("sgemm");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    for threads in [1, 2] {
        set_num_threads(threads);
        g.bench_function(format!("1024^3 threads={threads}"), |bch| {
            bch.iter(|| {
                sgemm(
                    n,
                    n,
                    n,
                    black_box(&a),
                    false,
                    black_box(&b),
                    false,
                    &mut out,
                    false,
                )
            })
        });
    }
    g.finish();
}

fn bench_conv1d(c: &mut Criterion) {
    set_num_threads(2);
    let layer1 = Conv1dShape {
        batch: 1,
        in_channels: 1,
        out_channels: 512,
        in_len: 120_000,
        kernel: 10,
        stride: 5,
        padding: 0,
        groups: 1,
    };
    let layer2 = Conv1dShape {
        batch: 1,
        in_channels: 512,
        out_channels: 512,
        in_len: 23_999,
        kernel: 3,
        stride: 2,
        padding: 0,
        groups: 1,
    };
    let pos = Conv1dShape {
        batch: 1,
        in_channels: 768,
        out_channels: 768,
        in_len: 374,
        kernel: 128,
        stride: 1,
        padding: 64,
        groups: 16,
    };
    let mut g = c.benchmark_group("conv1d");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    for (name, s) in [
        ("layer1 1->512 k10s5 L120000", layer1),
        ("layer2 512->512 k3s2 L23999", layer2),
        ("posconv 768 k128 g16 L374", pos),
    ] {
        let kin = s.in_channels / s.groups * s.kernel;
        let (x, w, bias) = (
            data(s.in_channels * s.in_len, 3),
            data(s.out_channels * kin, 4),
            data(s.out_channels, 5),
        );
        let mut out = vec![0.0f32; s.out_channels * s.out_len()];
        g.throughput(Throughput::Elements(
            2 * (s.out_channels * kin * s.out_len()) as u64,
        ));
        g.bench_function(format!("forward {name}"), |bch| {
            bch.iter(|| conv1d_forward(&mut out, black_box(&x), &w, Some(&bias), &s))
        });
        let dout = data(out.len(), 6);
        let (mut dx, mut dw, mut db) = (
            vec![0.0; x.len()],
            vec![0.0; w.len()],
            vec![0.0; bias.len()],
        );
        g.throughput(Throughput::Elements(
            4 * (s.out_channels * kin * s.out_len()) as u64,
        ));
        g.bench_function(format!("backward {name}"), |bch| {
            bch.iter(|| {
                conv1d_backward(
                    Some(&mut dx),
                    Some(&mut dw),
                    Some(&mut db),
                    black_box(&dout),
                    &x,
                    &w,
                    &s,
                )
            })
        });
    }
    g.finish();
}

fn bench_transformer_parts(c: &mut Criterion) {
    set_num_threads(2);
    let (t, hidden, ffn) = (374, 768, 3072);
    let s = AttentionShape {
        batch: 1,
        seq: t,
        heads: 12,
        head_dim: 64,
    };
    let (q, k, v) = (
        data(t * hidden, 7),
        data(t * hidden, 8),
        data(t * hidden, 9),
    );
    let (mut out, mut lse) = (vec![0.0f32; t * hidden], vec![0.0f32; 12 * t]);
    let mut g = c.benchmark_group("transformer");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    g.throughput(Throughput::Elements(4 * (t * t * hidden) as u64));
    g.bench_function("attention forward T374 H12 D64", |bch| {
        bch.iter(|| {
            attention_forward(
                &mut out,
                &mut lse,
                black_box(&q),
                &k,
                &v,
                None,
                &s,
                0.125,
                None,
            )
        })
    });
    let dout = data(t * hidden, 10);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; t * hidden],
        vec![0.0; t * hidden],
        vec![0.0; t * hidden],
    );
    g.throughput(Throughput::Elements(10 * (t * t * hidden) as u64));
    g.bench_function("attention backward T374 H12 D64", |bch| {
        bch.iter(|| {
            attention_backward(
                &mut dq,
                &mut dk,
                &mut dv,
                black_box(&dout),
                &q,
                &k,
                &v,
                &out,
                &lse,
                None,
                &s,
                0.125,
                None,
            )
        })
    });
    let (x, w, b) = (data(t * hidden, 11), data(ffn * hidden, 12), data(ffn, 13));
    let mut h = vec![0.0f32; t * ffn];
    g.throughput(Throughput::Elements(2 * (t * hidden * ffn) as u64));
    g.bench_function("linear 374x768 -> 3072", |bch| {
        bch.iter(|| linear_forward(&mut h, black_box(&x), &w, Some(&b), t, hidden, ffn))
    });
    let hx = data(t * ffn, 14);
    g.throughput(Throughput::Elements((t * ffn) as u64));
    g.bench_function("gelu 374x3072", |bch| {
        bch.iter(|| gelu_forward(&mut h, black_box(&hx)))
    });
    let (mut y, mut m, mut r) = (vec![0.0f32; t * hidden], vec![0.0f32; t], vec![0.0f32; t]);
    let (lw, lb) = (data(hidden, 15), data(hidden, 16));
    g.throughput(Throughput::Elements((t * hidden) as u64));
    g.bench_function("layer_norm 374x768", |bch| {
        bch.iter(|| {
            layer_norm_forward(
                &mut y,
                &mut m,
                &mut r,
                black_box(&x),
                &lw,
                &lb,
                t,
                hidden,
                1e-5,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench_sgemm, bench_conv1d, bench_transformer_parts);
criterion_main!(benches);
