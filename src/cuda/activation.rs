//! Launchers for the config's activation: exact GELU (`kernels/gelu.cu`, via `cuda::gelu`) and ReLU
//! (`kernels/relu.cu`); contracts of `crate::ops::activation`.

use anyhow::{ensure, Result};

use super::elementwise::{MAX_BLOCKS, THREADS};
use super::gelu;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::ops::activation::Activation;

/// out = f(x).
pub fn activation_forward(
    dev: &CudaDevice,
    act: Activation,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
) -> Result<()> {
    match act {
        Activation::Gelu => gelu::gelu_forward(dev, out, x),
        Activation::Relu => {
            let n = out.len();
            ensure!(x.len() == n, "relu_forward: length {} -> {n}", x.len());
            let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
            dev.launch(
                &registry::RELU_FORWARD_F32,
                cfg,
                KernelArgs::new().buf_mut(out).buf(x).i64(n as i64),
            )
        }
    }
}

/// dx += dout * f'(x).
pub fn activation_backward(
    dev: &CudaDevice,
    act: Activation,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
) -> Result<()> {
    match act {
        Activation::Gelu => gelu::gelu_backward(dev, dx, dout, x),
        Activation::Relu => {
            let n = dx.len();
            ensure!(
                dout.len() == n && x.len() == n,
                "relu_backward: lengths dout {} x {} dx {n}",
                dout.len(),
                x.len()
            );
            let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
            dev.launch(
                &registry::RELU_BACKWARD_F32,
                cfg,
                KernelArgs::new().buf_mut(dx).buf(dout).buf(x).i64(n as i64),
            )
        }
    }
}
