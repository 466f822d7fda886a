//! Launcher for `kernels/adamw.cu`: one fused AdamW step over many tensors (torch.optim.AdamW
//! semantics exactly as `crate::train::optim`: same scalars, same operation order, bit-exact).

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

const THREADS: u32 = 256;
/// Blocks per tensor at most (grid-stride beyond).
const MAX_BLOCKS_PER_TENSOR: usize = 1024;
/// u64 slots per tensor descriptor (layout in kernels/adamw.cu).
const TABLE_SLOTS: usize = 9;

/// The f32 scalars of one tensor's update, computed in f64 and rounded once as `train::optim` does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwScalars {
    pub decay: f32,
    pub w1: f32,
    pub b2: f32,
    pub w2: f32,
    pub neg_step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
    pub apply_decay: bool,
}

impl AdamwScalars {
    /// `lr`: the group's effective learning rate (scheduled lr × lr_scale); `step`: this tensor's
    /// update count after incrementing (1 on the first step).
    pub fn new(lr: f64, betas: (f64, f64), eps: f64, weight_decay: f64, step: u64) -> Self {
        let (b1, b2) = betas;
        let t = step as f64;
        AdamwScalars {
            decay: (1.0 - lr * weight_decay) as f32,
            w1: (1.0 - b1) as f32,
            b2: b2 as f32,
            w2: (1.0 - b2) as f32,
            neg_step_size: (-(lr / (1.0 - b1.powf(t)))) as f32,
            bc2_sqrt: (1.0 - b2.powf(t)).sqrt() as f32,
            eps: eps as f32,
            apply_decay: weight_decay != 0.0,
        }
    }
}

/// One parameter tensor with its gradient, moments and update scalars.
pub struct AdamwTensor<'a> {
    pub param: &'a mut DeviceBuffer<f32>,
    pub grad: &'a DeviceBuffer<f32>,
    pub exp_avg: &'a mut DeviceBuffer<f32>,
    pub exp_avg_sq: &'a mut DeviceBuffer<f32>,
    pub scalars: AdamwScalars,
}

fn pack(lo: f32, hi: f32) -> u64 {
    lo.to_bits() as u64 | (hi.to_bits() as u64) << 32
}

/// Updates every tensor in one launch (the descriptor table is uploaded per call). `name`s in errors
/// are tensor indices.
pub fn adamw_step(dev: &CudaDevice, tensors: &mut [AdamwTensor<'_>]) -> Result<()> {
    let mut table = Vec::with_capacity(tensors.len() * TABLE_SLOTS);
    let mut max_n = 0;
    for (i, t) in tensors.iter_mut().enumerate() {
        let n = t.param.len();
        for (what, len) in [
            ("gradient", t.grad.len()),
            ("exp_avg", t.exp_avg.len()),
            ("exp_avg_sq", t.exp_avg_sq.len()),
        ] {
            ensure!(
                len == n,
                "adamw tensor {i}: {what} has {len} values for {n}"
            );
        }
        check::int("adamw tensor length", n)?;
        max_n = max_n.max(n);
        let s = &t.scalars;
        table.extend_from_slice(&[
            t.param.device_ptr(),
            t.grad.device_ptr(),
            t.exp_avg.device_ptr(),
            t.exp_avg_sq.device_ptr(),
            n as u64,
            pack(s.decay, s.w1),
            pack(s.b2, s.w2),
            pack(s.neg_step_size, s.bc2_sqrt),
            pack(s.eps, f32::from_bits(s.apply_decay as u32)),
        ]);
    }
    ensure!(
        tensors.len() <= 65535,
        "adamw: {} tensors exceed one launch (65535)",
        tensors.len()
    );
    if max_n == 0 {
        return Ok(());
    }
    let table = dev.htod(&table)?;
    let blocks = max_n.div_ceil(THREADS as usize).min(MAX_BLOCKS_PER_TENSOR);
    let cfg = LaunchConfig::new((blocks as u32, tensors.len() as u32, 1), (THREADS, 1, 1));
    dev.launch(
        &registry::ADAMW_STEP_F32,
        cfg,
        // Per element: read param, grad, both moments; write param and both moments.
        KernelArgs::new()
            .buf(&table)
            .indirect_bytes(7 * 4 * tensors.iter().map(|t| t.param.len() as u64).sum::<u64>()),
    )?;
    // The table is freed on return: make sure the (asynchronous) launch has read it.
    dev.synchronize()
}
