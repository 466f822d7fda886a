//! Criterion benches of the CUDA kernels: on the GPU when a driver and device are usable, otherwise
//! on the host emulator (which measures the emulator, not the kernel). The device is synchronised
//! inside every iteration, before the clock stops.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use culturemert_raw::cuda::{gelu, gemm, layer_norm, reduce};
use culturemert_raw::device::{CudaDevice, Schedule};

fn device() -> CudaDevice {
    CudaDevice::driver(0).unwrap_or_else(|e| {
        eprintln!("no GPU ({e:#}): benchmarking the host emulator");
        CudaDevice::emulated_with(Schedule::Forward)
    })
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn benches(c: &mut Criterion) {
    let dev = device();
    let emu = dev.is_emulated();
    let mut g = c.benchmark_group(format!("kernels/{}", if emu { "emu" } else { "cuda" }));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));

    for &(m, n, k) in if emu {
        &[(128usize, 128usize, 128usize), (256, 256, 256)][..]
    } else {
        &[(1024, 1024, 1024), (4096, 768, 768)][..]
    } {
        let (a, b) = (
            dev.htod(&values(m * k)).unwrap(),
            dev.htod(&values(k * n)).unwrap(),
        );
        let mut out = dev.alloc::<f32>(m * n).unwrap();
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(format!("gemm_nt {m}x{n}x{k} (elements = flop)"), |it| {
            it.iter(|| {
                gemm::sgemm(&dev, m, n, k, &a, false, &b, true, None, &mut out, false).unwrap();
                dev.synchronize().unwrap();
            })
        });
    }

    let (rows, cols) = if emu { (256, 768) } else { (8192, 768) };
    let x = dev.htod(&values(rows * cols)).unwrap();
    let (w, bias) = (
        dev.htod(&vec![1.0f32; cols]).unwrap(),
        dev.htod(&vec![0.0f32; cols]).unwrap(),
    );
    let mut out = dev.alloc::<f32>(rows * cols).unwrap();
    let (mut mean, mut rstd) = (
        dev.alloc::<f32>(rows).unwrap(),
        dev.alloc::<f32>(rows).unwrap(),
    );
    g.throughput(Throughput::Elements((rows * cols) as u64));
    g.bench_function(format!("layer_norm_forward {rows}x{cols}"), |it| {
        it.iter(|| {
            layer_norm::layer_norm_forward(
                &dev, &mut out, &mut mean, &mut rstd, &x, &w, &bias, rows, cols, 1e-5,
            )
            .unwrap();
            dev.synchronize().unwrap();
        })
    });
    g.bench_function(format!("gelu_forward {}", rows * cols), |it| {
        it.iter(|| {
            gelu::gelu_forward(&dev, &mut out, &x).unwrap();
            dev.synchronize().unwrap();
        })
    });
    g.bench_function(format!("global_norm 2 x {}", rows * cols), |it| {
        it.iter(|| reduce::global_norm(&dev, &[&x, &out]).unwrap())
    });
    g.finish();
}

criterion_group!(kernel_benches, benches);
criterion_main!(kernel_benches);
