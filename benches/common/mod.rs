//! Helpers shared by the kernel bench targets (`kernels`, `kernels_misc`): the device (a GPU when one
//! is usable, else the emulator), inputs, throughput units, groups and the criterion defaults.
#![allow(dead_code)] // each bench target uses a subset

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use culturemert_raw::device::{CudaDevice, DeviceBuffer, Schedule};

pub fn device() -> CudaDevice {
    CudaDevice::driver(0).unwrap_or_else(|e| {
        eprintln!("no GPU ({e:#}): benchmarking the host emulator with small shapes");
        CudaDevice::emulated_with(Schedule::Forward)
    })
}

pub fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

pub fn upload(dev: &CudaDevice, n: usize) -> DeviceBuffer<f32> {
    dev.htod(&values(n)).unwrap()
}

pub fn zeros(dev: &CudaDevice, n: usize) -> DeviceBuffer<f32> {
    dev.alloc_zeros::<f32>(n).unwrap()
}

/// FLOPs (reported as elements) and the minimum f32 bytes moved (`floats` x 4).
pub fn flops(flop: usize, floats: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: flop as u64,
        bytes: 4 * floats as u64,
    }
}

/// Minimum bytes moved for `floats` f32 values.
pub fn floats(n: usize) -> Throughput {
    Throughput::BytesDecimal(4 * n as u64)
}

pub fn group<'a>(c: &'a mut Criterion, emu: bool, family: &str) -> BenchmarkGroup<'a, WallTime> {
    c.benchmark_group(format!(
        "kernels/{}/{family}",
        if emu { "emu" } else { "cuda" }
    ))
}

/// Times `f` (launches) plus a device synchronisation.
pub fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    dev: &CudaDevice,
    name: String,
    tp: Throughput,
    mut f: impl FnMut(),
) {
    g.throughput(tp);
    g.bench_function(name, |it| {
        it.iter(|| {
            f();
            dev.synchronize().unwrap();
        })
    });
}

/// Short defaults (command-line options such as --measurement-time override them).
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2))
}
