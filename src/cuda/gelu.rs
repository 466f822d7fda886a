//! Launchers for `kernels/gelu.cu`: exact (erf) GELU (contracts of `crate::ops::gelu`).

use anyhow::{ensure, Result};

use super::elementwise::{MAX_BLOCKS, THREADS};
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// out = 0.5 x (1 + erf(x / sqrt 2)).
pub fn gelu_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
) -> Result<()> {
    let n = out.len();
    ensure!(x.len() == n, "gelu_forward: length {} -> {n}", x.len());
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        &registry::GELU_FORWARD_F32,
        cfg,
        KernelArgs::new().buf_mut(out).buf(x).i64(n as i64),
    )
}

/// dx += dout * GELU'(x).
pub fn gelu_backward(
    dev: &CudaDevice,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
) -> Result<()> {
    let n = dx.len();
    ensure!(
        dout.len() == n && x.len() == n,
        "gelu_backward: lengths dout {} x {} dx {n}",
        dout.len(),
        x.len()
    );
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        &registry::GELU_BACKWARD_F32,
        cfg,
        KernelArgs::new().buf_mut(dx).buf(dout).buf(x).i64(n as i64),
    )
}
