//! Launchers for `kernels/layer_norm.cu` (contracts of `crate::ops::layer_norm`).

use anyhow::Result;

use super::{check, registry};
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Rows per block (one warp each) of the row kernels; threads per block of the column kernel.
const ROWS_PER_BLOCK: u32 = 4;
const COLUMN_THREADS: u32 = 128;

fn row_config(rows: usize) -> LaunchConfig {
    LaunchConfig::new(
        (rows.div_ceil(ROWS_PER_BLOCK as usize).max(1) as u32, 1, 1),
        (32, ROWS_PER_BLOCK, 1),
    )
}

/// out = (x - mean) * rstd * weight + bias over the last dim of x [rows, cols]; writes mean, rstd [rows].
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    mean: &mut DeviceBuffer<f32>,
    rstd: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    bias: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    check::len("layer_norm x", x, rows * cols)?;
    check::len("layer_norm out", out, rows * cols)?;
    check::len("layer_norm mean", mean, rows)?;
    check::len("layer_norm rstd", rstd, rows)?;
    check::len("layer_norm weight", weight, cols)?;
    check::len("layer_norm bias", bias, cols)?;
    if rows == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf_mut(mean)
        .buf_mut(rstd)
        .buf(x)
        .buf(weight)
        .buf(bias)
        .i32(check::int("rows", rows)?)
        .i32(check::int("cols", cols)?)
        .f32(eps);
    dev.launch(&registry::LAYER_NORM_FORWARD_F32, row_config(rows), args)
}

/// Accumulates dx, dweight, dbias (each only if given) from the saved mean and rstd.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dev: &CudaDevice,
    dx: Option<&mut DeviceBuffer<f32>>,
    dweight: Option<&mut DeviceBuffer<f32>>,
    dbias: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    mean: &DeviceBuffer<f32>,
    rstd: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check::len("layer_norm dout", dout, rows * cols)?;
    check::len("layer_norm x", x, rows * cols)?;
    check::len("layer_norm weight", weight, cols)?;
    check::len("layer_norm mean", mean, rows)?;
    check::len("layer_norm rstd", rstd, rows)?;
    let (r, c) = (check::int("rows", rows)?, check::int("cols", cols)?);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if let Some(dx) = dx {
        check::len("layer_norm dx", dx, rows * cols)?;
        let args = KernelArgs::new()
            .buf_mut(dx)
            .buf(dout)
            .buf(x)
            .buf(weight)
            .buf(mean)
            .buf(rstd)
            .i32(r)
            .i32(c);
        dev.launch(
            &registry::LAYER_NORM_BACKWARD_DX_F32,
            row_config(rows),
            args,
        )?;
    }
    if dweight.is_none() && dbias.is_none() {
        return Ok(());
    }
    if let Some(dw) = &dweight {
        check::len("layer_norm dweight", dw, cols)?;
    }
    if let Some(db) = &dbias {
        check::len("layer_norm dbias", db, cols)?;
    }
    let cfg = LaunchConfig::new(
        (cols.div_ceil(COLUMN_THREADS as usize) as u32, 1, 1),
        (COLUMN_THREADS, 1, 1),
    );
    let args = KernelArgs::new()
        .opt_buf_mut(dweight)
        .opt_buf_mut(dbias)
        .buf(dout)
        .buf(x)
        .buf(mean)
        .buf(rstd)
        .i32(r)
        .i32(c);
    dev.launch(&registry::LAYER_NORM_BACKWARD_PARAMS_F32, cfg, args)
}
