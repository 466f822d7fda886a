//! Launchers for `kernels/elementwise.cu` (contracts of `crate::ops::elementwise`).

use anyhow::{ensure, Result};

use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Threads per block and the grid cap of the grid-stride elementwise kernels.
pub(crate) const THREADS: u32 = 256;
pub(crate) const MAX_BLOCKS: u32 = 4096;

/// out = a + b (all the same length).
pub fn add(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    a: &DeviceBuffer<f32>,
    b: &DeviceBuffer<f32>,
) -> Result<()> {
    let n = out.len();
    ensure!(
        a.len() == n && b.len() == n,
        "add: lengths {} + {} -> {n}",
        a.len(),
        b.len()
    );
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        &registry::ADD_F32,
        cfg,
        KernelArgs::new().buf_mut(out).buf(a).buf(b).i64(n as i64),
    )
}

/// out = alpha * x.
pub fn scale(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    alpha: f32,
) -> Result<()> {
    let n = out.len();
    ensure!(x.len() == n, "scale: length {} -> {n}", x.len());
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        &registry::SCALE_F32,
        cfg,
        KernelArgs::new()
            .buf_mut(out)
            .buf(x)
            .f32(alpha)
            .i64(n as i64),
    )
}
