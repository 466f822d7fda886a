//! Launchers for `kernels/reduce.cu`: the deterministic global L2 norm and column sums.

use anyhow::{ensure, Result};

use super::{check, registry};
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

const NORM_THREADS: u32 = 256;
/// Blocks per tensor in the first pass: fixed by the largest tensor, so the summation order (and
/// the result) depends only on the tensor lengths.
const MAX_BLOCKS_PER_TENSOR: usize = 64;
const COLUMN_THREADS: u32 = 128;

/// Writes sqrt(sum of squares of every element of every tensor) to `out[0]`, in a fixed order.
pub fn global_norm_into(
    dev: &CudaDevice,
    tensors: &[&DeviceBuffer<f32>],
    out: &mut DeviceBuffer<f32>,
) -> Result<()> {
    check::len("global_norm out", out, 1)?;
    ensure!(
        !tensors.is_empty() && tensors.len() <= 65535,
        "global_norm over {} tensors (1..=65535)",
        tensors.len()
    );
    let ptrs: Vec<u64> = tensors.iter().map(|t| t.device_ptr()).collect();
    let lens: Vec<i64> = tensors.iter().map(|t| t.len() as i64).collect();
    let max_len = tensors.iter().map(|t| t.len()).max().unwrap_or(0);
    let blocks = max_len
        .div_ceil(NORM_THREADS as usize)
        .clamp(1, MAX_BLOCKS_PER_TENSOR);
    let ptrs = dev.htod(&ptrs)?;
    let lens = dev.htod(&lens)?;
    let n_partials = blocks * tensors.len();
    let mut partials = dev.alloc::<f32>(n_partials)?;
    let cfg = LaunchConfig::new(
        (blocks as u32, tensors.len() as u32, 1),
        (NORM_THREADS, 1, 1),
    );
    dev.launch(
        &registry::GLOBAL_NORM_PARTIALS_F32,
        cfg,
        KernelArgs::new()
            .buf_mut(&mut partials)
            .buf(&ptrs)
            .buf(&lens),
    )?;
    let cfg = LaunchConfig::new((1, 1, 1), (NORM_THREADS, 1, 1));
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(&partials)
        .i32(check::int("partials", n_partials)?);
    dev.launch(&registry::GLOBAL_NORM_FINISH_F32, cfg, args)?;
    // The tables must outlive the kernels on a real GPU.
    dev.synchronize()
}

/// The global L2 norm of `tensors`, read back to the host.
pub fn global_norm(dev: &CudaDevice, tensors: &[&DeviceBuffer<f32>]) -> Result<f32> {
    let mut out = dev.alloc::<f32>(1)?;
    global_norm_into(dev, tensors, &mut out)?;
    Ok(dev.dtoh(&out)?[0])
}

/// out[c] (= or += if `accumulate`) sum over r of x[r, c] for x [rows, cols], rows in order.
pub fn column_sum(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    check::len("column_sum x", x, rows * cols)?;
    check::len("column_sum out", out, cols)?;
    if cols == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig::new(
        (cols.div_ceil(COLUMN_THREADS as usize) as u32, 1, 1),
        (COLUMN_THREADS, 1, 1),
    );
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .i32(check::int("rows", rows)?)
        .i32(check::int("cols", cols)?)
        .i32(accumulate as i32);
    dev.launch(&registry::COLUMN_SUM_F32, cfg, args)
}
