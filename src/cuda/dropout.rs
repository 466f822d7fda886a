//! Launchers for `kernels/dropout.cu`: counter-based dropout reproducing `crate::ops::dropout` bit for
//! bit (same mask from the same seed on forward and backward; no mask tensor).

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

const THREADS: u32 = 256;
const MAX_BLOCKS: u32 = 1 << 16;

fn apply(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    n: usize,
    p: f32,
    seed: u64,
    accumulate: bool,
) -> Result<()> {
    ensure!((0.0..=1.0).contains(&p), "dropout: p = {p} outside [0, 1]");
    check::len("dropout input", x, n)?;
    check::len("dropout output", out, n)?;
    if n == 0 {
        return Ok(());
    }
    // The same f32 rounding as the CPU op (p = 1 gives inf, never used: nothing is kept).
    let scale = 1.0f32 / (1.0f32 - p);
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .i64(n as i64)
        .f32(p)
        .f32(scale)
        .u64(seed)
        .i32(accumulate as i32);
    dev.launch(
        &registry::DROPOUT_APPLY_F32,
        LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS),
        args,
    )
}

/// out[i] = keep(seed, i) ? x[i] / (1 - p) : 0 for the first `n` elements.
pub fn dropout_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    n: usize,
    p: f32,
    seed: u64,
) -> Result<()> {
    apply(dev, out, x, n, p, seed, false)
}

/// dx[i] += keep(seed, i) ? dout[i] / (1 - p) : 0 (the forward's mask for the same seed).
pub fn dropout_backward(
    dev: &CudaDevice,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    n: usize,
    p: f32,
    seed: u64,
) -> Result<()> {
    apply(dev, dx, dout, n, p, seed, true)
}
