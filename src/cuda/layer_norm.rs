//! Launchers for `kernels/layer_norm.cu` (contracts of `crate::ops::layer_norm`).

use anyhow::{ensure, Result};

use super::check;
use super::reduce::{sum_partials, SplitPolicy, COLUMN_SPLIT};
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Rows per block (one warp each) of the row kernels.
const ROWS_PER_BLOCK: u32 = 4;
/// Warps per block of the column kernel (`PARAM_WARPS`); each block owns 32 columns.
const PARAM_WARPS: u32 = 8;

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

/// Accumulates dx, dweight, dbias (each only if given) from the saved mean and rstd; dweight and
/// dbias are column reductions split by [`COLUMN_SPLIT`].
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
    layer_norm_backward_with(
        dev,
        dx,
        dweight,
        dbias,
        dout,
        x,
        weight,
        mean,
        rstd,
        rows,
        cols,
        COLUMN_SPLIT,
    )
}

/// [`layer_norm_backward`] with an explicit split policy for dweight/dbias (tests force small chunks).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_with(
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
    split: SplitPolicy,
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
    if let Some(dw) = &dweight {
        check::len("layer_norm dweight", dw, cols)?;
    }
    if let Some(db) = &dbias {
        check::len("layer_norm dbias", db, cols)?;
    }
    if dweight.is_none() && dbias.is_none() {
        return Ok(());
    }
    let tiles = cols.div_ceil(32);
    let (chunks, chunk) = split.split(tiles, rows);
    ensure!(chunks <= 65535, "layer_norm: {chunks} row chunks");
    let cfg = LaunchConfig::new(
        (
            check::int("layer_norm column tiles", tiles)? as u32,
            chunks as u32,
            1,
        ),
        (32, PARAM_WARPS, 1),
    );
    // partials [2, S, cols]: dweight's S rows, then dbias's.
    let mut partials = if chunks > 1 {
        Some(dev.alloc::<f32>(2 * chunks * cols)?)
    } else {
        None
    };
    let (mut dweight, mut dbias) = (dweight, dbias);
    let args = KernelArgs::new()
        .opt_buf_mut(dweight.as_deref_mut())
        .opt_buf_mut(dbias.as_deref_mut())
        .opt_buf_mut(partials.as_mut())
        .buf(dout)
        .buf(x)
        .buf(mean)
        .buf(rstd)
        .i32(r)
        .i32(c)
        .i32(check::int("layer_norm chunk", chunk)?);
    dev.launch(&registry::LAYER_NORM_BACKWARD_PARAMS_F32, cfg, args)?;
    if let Some(p) = &partials {
        if let Some(dw) = dweight {
            sum_partials(dev, dw, p, 0, chunks, true)?;
        }
        if let Some(db) = dbias {
            sum_partials(dev, db, p, chunks * cols, chunks, true)?;
        }
    }
    Ok(())
}
