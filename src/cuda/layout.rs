//! Launchers for `kernels/layout.cu`: the small layout, masking, pooling, gather and loss kernels of the
//! whole-model device path, each the device twin of a CPU op:
//! - [`transpose_last2`]: `crate::ops::elementwise::transpose_last2` (forward and, with `accumulate`,
//!   its backward);
//! - [`narrow_last`] / [`narrow_last_backward`]: `crate::autograd::nn::narrow_last`;
//! - [`mask_rows`]: `nn::zero_invalid_frames` (forward: overwrite, backward: accumulate);
//! - [`replace_masked_rows_forward`] / [`replace_masked_rows_backward`]: `nn::replace_masked_frames`;
//! - [`mean_pool_time_forward`] / [`mean_pool_time_backward`]: `crate::ops::pooling`;
//! - [`gather_rows`] / [`gather_rows_backward`]: `crate::autograd::loss::gather_rows`;
//! - [`squared_error_sum`] / [`squared_error_backward`]: the sums behind `loss::mse` and
//!   `loss::mean_square` (the caller divides by n and picks `scale = 2 dloss / n`);
//! - [`fill`], [`copy`], [`add_scaled`].
//!
//! Buffers may be longer than the shape needs (only the leading elements are used), except where a
//! launcher says the lengths must be equal. Device-side index data (lengths, gather indices) cannot be
//! checked by the launcher: the kernels clamp or skip out-of-range values, as documented per launcher.

use anyhow::{ensure, Result};

use super::elementwise::{MAX_BLOCKS, THREADS};
use super::{check, reduce};
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Tile edge of the transpose and the rows of it each thread row handles (block TILE x TILE_ROWS).
const TILE: usize = 32;
const TILE_ROWS: u32 = 8;
/// Largest grid.y / grid.z.
const MAX_GRID_YZ: usize = 65535;
/// Threads per block of the column (one thread per column) kernels.
const COLUMN_THREADS: u32 = 128;
/// Threads per block and block count cap of the squared-error partial sums. The block count depends
/// only on n, so the summation order (and the result) does too.
const REDUCE_THREADS: u32 = 256;
const REDUCE_MAX_BLOCKS: usize = 256;

fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS)
}

fn columns(cols: usize, grid_y: usize) -> LaunchConfig {
    LaunchConfig::new(
        (
            cols.div_ceil(COLUMN_THREADS as usize).max(1) as u32,
            grid_y as u32,
            1,
        ),
        (COLUMN_THREADS, 1, 1),
    )
}

/// x [batch, rows, cols] -> out [batch, cols, rows]; `accumulate`: out += instead of out =.
/// With `accumulate` this is also the backward of a transpose (dx += dout transposed back).
pub fn transpose_last2(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    batch: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    let n = batch * rows * cols;
    check::len("transpose_last2 x", x, n)?;
    check::len("transpose_last2 out", out, n)?;
    check::int("transpose_last2 rows * cols", rows * cols)?;
    ensure!(
        rows.div_ceil(TILE) <= MAX_GRID_YZ,
        "transpose_last2: {rows} rows exceed {} tiles of {TILE}",
        MAX_GRID_YZ
    );
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig::new(
        (
            cols.div_ceil(TILE) as u32,
            rows.div_ceil(TILE) as u32,
            batch.min(MAX_GRID_YZ) as u32,
        ),
        (TILE as u32, TILE_ROWS, 1),
    );
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .i32(check::int("transpose_last2 batch", batch)?)
        .i32(rows as i32)
        .i32(cols as i32)
        .i32(accumulate as i32);
    dev.launch(&registry::TRANSPOSE_LAST2_F32, cfg, args)
}

fn narrow_checks(
    what: &str,
    long: &DeviceBuffer<f32>,
    short: &DeviceBuffer<f32>,
    outer: usize,
    in_len: usize,
    out_len: usize,
) -> Result<()> {
    ensure!(
        out_len <= in_len,
        "{what}: keeping {out_len} of {in_len} steps"
    );
    check::int(what, in_len)?;
    check::len(&format!("{what} [outer, in_len]"), long, outer * in_len)?;
    check::len(&format!("{what} [outer, out_len]"), short, outer * out_len)
}

/// out[o, t] = x[o, t] for x [outer, in_len], out [outer, out_len], out_len <= in_len.
pub fn narrow_last(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    outer: usize,
    in_len: usize,
    out_len: usize,
) -> Result<()> {
    narrow_checks("narrow_last", x, out, outer, in_len, out_len)?;
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .i64(outer as i64)
        .i32(in_len as i32)
        .i32(out_len as i32);
    dev.launch(
        &registry::NARROW_LAST_F32,
        elementwise(outer * out_len),
        args,
    )
}

/// dx[o, t] += dout[o, t] for t < out_len; dx [outer, in_len], dout [outer, out_len].
pub fn narrow_last_backward(
    dev: &CudaDevice,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    outer: usize,
    in_len: usize,
    out_len: usize,
) -> Result<()> {
    narrow_checks("narrow_last_backward", dx, dout, outer, in_len, out_len)?;
    let args = KernelArgs::new()
        .buf_mut(dx)
        .buf(dout)
        .i64(outer as i64)
        .i32(in_len as i32)
        .i32(out_len as i32);
    dev.launch(
        &registry::NARROW_LAST_BACKWARD_F32,
        elementwise(outer * out_len),
        args,
    )
}

/// out[r, :] = keep[r] != 0 ? x[r, :] : 0 (or += with `accumulate`, leaving dropped rows untouched)
/// for x, out [rows, cols], keep [rows].
pub fn mask_rows(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    keep: &DeviceBuffer<u8>,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    check::len("mask_rows x", x, rows * cols)?;
    check::len("mask_rows out", out, rows * cols)?;
    check::len("mask_rows keep", keep, rows)?;
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .buf(keep)
        .i64(rows as i64)
        .i32(check::int("mask_rows cols", cols)?)
        .i32(accumulate as i32);
    dev.launch(&registry::MASK_ROWS_F32, elementwise(rows * cols), args)
}

/// out[r, :] = masked[r] != 0 ? emb : x[r, :] for x, out [rows, cols], emb [cols], masked [rows].
pub fn replace_masked_rows_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    emb: &DeviceBuffer<f32>,
    masked: &DeviceBuffer<u8>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check::len("replace_masked_rows x", x, rows * cols)?;
    check::len("replace_masked_rows out", out, rows * cols)?;
    check::len("replace_masked_rows emb", emb, cols)?;
    check::len("replace_masked_rows masked", masked, rows)?;
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .buf(emb)
        .buf(masked)
        .i64(rows as i64)
        .i32(check::int("replace_masked_rows cols", cols)?);
    dev.launch(
        &registry::REPLACE_MASKED_ROWS_FORWARD_F32,
        elementwise(rows * cols),
        args,
    )
}

/// dx[r, :] += dout[r, :] for unmasked rows; demb[c] += sum over masked rows (in row order, bit-identical
/// to the CPU op) of dout[r, c]. Either output may be absent.
pub fn replace_masked_rows_backward(
    dev: &CudaDevice,
    dx: Option<&mut DeviceBuffer<f32>>,
    demb: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    masked: &DeviceBuffer<u8>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    check::len("replace_masked_rows dout", dout, rows * cols)?;
    check::len("replace_masked_rows masked", masked, rows)?;
    let c = check::int("replace_masked_rows cols", cols)?;
    if let Some(dx) = dx {
        check::len("replace_masked_rows dx", dx, rows * cols)?;
        let args = KernelArgs::new()
            .buf_mut(dx)
            .buf(dout)
            .buf(masked)
            .i64(rows as i64)
            .i32(c);
        dev.launch(
            &registry::REPLACE_MASKED_ROWS_BACKWARD_DX_F32,
            elementwise(rows * cols),
            args,
        )?;
    }
    if let Some(demb) = demb {
        check::len("replace_masked_rows demb", demb, cols)?;
        let args = KernelArgs::new()
            .buf_mut(demb)
            .buf(dout)
            .buf(masked)
            .i32(check::int("replace_masked_rows rows", rows)?)
            .i32(c);
        dev.launch(
            &registry::REPLACE_MASKED_ROWS_BACKWARD_DEMB_F32,
            columns(cols, 1),
            args,
        )?;
    }
    Ok(())
}

fn pool_checks(
    what: &str,
    frames_buf: &DeviceBuffer<f32>,
    pooled: &DeviceBuffer<f32>,
    lengths: &DeviceBuffer<i32>,
    batch: usize,
    frames: usize,
    dim: usize,
) -> Result<()> {
    check::len(
        &format!("{what} [B, T, H]"),
        frames_buf,
        batch * frames * dim,
    )?;
    check::len(&format!("{what} [B, H]"), pooled, batch * dim)?;
    check::len(&format!("{what} lengths"), lengths, batch)?;
    check::int(what, frames * dim)?;
    Ok(())
}

/// out[b, h] = mean over t < lengths[b] of x[b, t, h] for x [batch, frames, dim] (0 when the length is
/// 0). Lengths are device data: the kernel clamps them to [0, frames].
#[allow(clippy::too_many_arguments)]
pub fn mean_pool_time_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    lengths: &DeviceBuffer<i32>,
    batch: usize,
    frames: usize,
    dim: usize,
) -> Result<()> {
    pool_checks("mean_pool_time", x, out, lengths, batch, frames, dim)?;
    ensure!(
        batch <= MAX_GRID_YZ,
        "mean_pool_time: batch {batch} > {MAX_GRID_YZ}"
    );
    if batch == 0 || dim == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .buf(lengths)
        .i32(frames as i32)
        .i32(dim as i32);
    dev.launch(
        &registry::MEAN_POOL_TIME_FORWARD_F32,
        columns(dim, batch),
        args,
    )
}

/// dx[b, t, h] += dout[b, h] / lengths[b] for t < lengths[b] (clamped to [0, frames]).
#[allow(clippy::too_many_arguments)]
pub fn mean_pool_time_backward(
    dev: &CudaDevice,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    lengths: &DeviceBuffer<i32>,
    batch: usize,
    frames: usize,
    dim: usize,
) -> Result<()> {
    pool_checks(
        "mean_pool_time_backward",
        dx,
        dout,
        lengths,
        batch,
        frames,
        dim,
    )?;
    let args = KernelArgs::new()
        .buf_mut(dx)
        .buf(dout)
        .buf(lengths)
        .i32(check::int("mean_pool_time batch", batch)?)
        .i32(frames as i32)
        .i32(dim as i32);
    dev.launch(
        &registry::MEAN_POOL_TIME_BACKWARD_F32,
        elementwise(batch * frames * dim),
        args,
    )
}

/// Every element of `buf` = value.
pub fn fill(dev: &CudaDevice, buf: &mut DeviceBuffer<f32>, value: f32) -> Result<()> {
    let n = buf.len();
    let args = KernelArgs::new().buf_mut(buf).f32(value).i64(n as i64);
    dev.launch(&registry::FILL_F32, elementwise(n), args)
}

/// dst = src (equal lengths).
pub fn copy(dev: &CudaDevice, dst: &mut DeviceBuffer<f32>, src: &DeviceBuffer<f32>) -> Result<()> {
    let n = dst.len();
    ensure!(src.len() == n, "copy: length {} -> {n}", src.len());
    let args = KernelArgs::new().buf_mut(dst).buf(src).i64(n as i64);
    dev.launch(&registry::COPY_F32, elementwise(n), args)
}

/// dst += alpha * src (equal lengths).
pub fn add_scaled(
    dev: &CudaDevice,
    dst: &mut DeviceBuffer<f32>,
    src: &DeviceBuffer<f32>,
    alpha: f32,
) -> Result<()> {
    let n = dst.len();
    ensure!(src.len() == n, "add_scaled: length {} -> {n}", src.len());
    let args = KernelArgs::new()
        .buf_mut(dst)
        .buf(src)
        .f32(alpha)
        .i64(n as i64);
    dev.launch(&registry::ADD_SCALED_F32, elementwise(n), args)
}

/// out[i, :] = x[index[i], :] for i < index.len(), x [rows, cols], out [index.len(), cols].
/// Indices are device data: one outside [0, rows) gives a zero row (the CPU op rejects it; validate
/// on the host where the indices are built).
pub fn gather_rows(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    index: &DeviceBuffer<i32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let n = index.len();
    check::len("gather_rows x", x, rows * cols)?;
    check::len("gather_rows out", out, n * cols)?;
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .buf(index)
        .i64(n as i64)
        .i32(check::int("gather_rows rows", rows)?)
        .i32(check::int("gather_rows cols", cols)?);
    dev.launch(&registry::GATHER_ROWS_F32, elementwise(n * cols), args)
}

/// dx[index[i], :] += dout[i, :] for dx [rows, cols], dout [index.len(), cols].
/// Requirement: equal indices must be adjacent in `index` (sorted indices, as the masked-frame
/// indices are, satisfy it; so do unique ones). The first of a run of equal indices adds the whole run
/// in order, so the result is deterministic and bit-identical to the CPU op; equal indices that are
/// not adjacent would race. Out-of-range indices are skipped.
pub fn gather_rows_backward(
    dev: &CudaDevice,
    dx: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    index: &DeviceBuffer<i32>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let n = index.len();
    check::len("gather_rows_backward dx", dx, rows * cols)?;
    check::len("gather_rows_backward dout", dout, n * cols)?;
    let args = KernelArgs::new()
        .buf_mut(dx)
        .buf(dout)
        .buf(index)
        .i64(n as i64)
        .i32(check::int("gather_rows rows", rows)?)
        .i32(check::int("gather_rows cols", cols)?);
    dev.launch(
        &registry::GATHER_ROWS_BACKWARD_F32,
        elementwise(n * cols),
        args,
    )
}

fn squared_error_lengths(
    what: &str,
    a: &DeviceBuffer<f32>,
    b: Option<&DeviceBuffer<f32>>,
) -> Result<usize> {
    let n = a.len();
    if let Some(b) = b {
        ensure!(b.len() == n, "{what}: b has {} elements, a {n}", b.len());
    }
    Ok(n)
}

/// out[0] = sum over i of (a[i] - b[i])^2 (a[i]^2 without b), in a fixed order: per-block partial sums
/// (the block count depends only on a.len()), then the partials added in index order. No host sync.
pub fn squared_error_sum_into(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    a: &DeviceBuffer<f32>,
    b: Option<&DeviceBuffer<f32>>,
) -> Result<()> {
    let n = squared_error_lengths("squared_error_sum", a, b)?;
    check::len("squared_error_sum out", out, 1)?;
    let blocks = n
        .div_ceil(REDUCE_THREADS as usize)
        .clamp(1, REDUCE_MAX_BLOCKS);
    let mut partials = dev.alloc::<f32>(blocks)?;
    let cfg = LaunchConfig::new((blocks as u32, 1, 1), (REDUCE_THREADS, 1, 1));
    let args = KernelArgs::new()
        .buf_mut(&mut partials)
        .buf(a)
        .opt_buf(b)
        .i64(n as i64);
    dev.launch(&registry::SQUARED_ERROR_PARTIALS_F32, cfg, args)?;
    reduce::column_sum(dev, out, &partials, blocks, 1, false)?;
    // `partials` must outlive the kernels on a real GPU.
    dev.synchronize()
}

/// sum over i of (a[i] - b[i])^2 (a[i]^2 without b), deterministic, read back to the host.
/// mse = this / n; mean_square = this (b = None) / n.
pub fn squared_error_sum(
    dev: &CudaDevice,
    a: &DeviceBuffer<f32>,
    b: Option<&DeviceBuffer<f32>>,
) -> Result<f64> {
    let mut out = dev.alloc::<f32>(1)?;
    squared_error_sum_into(dev, &mut out, a, b)?;
    Ok(dev.dtoh(&out)?[0] as f64)
}

/// da += scale * (a - b) (scale * a without b); for mse/mean_square scale = 2 dloss / n.
pub fn squared_error_backward(
    dev: &CudaDevice,
    da: &mut DeviceBuffer<f32>,
    a: &DeviceBuffer<f32>,
    b: Option<&DeviceBuffer<f32>>,
    scale: f32,
) -> Result<()> {
    let n = squared_error_lengths("squared_error_backward", a, b)?;
    ensure!(
        da.len() == n,
        "squared_error_backward: da has {} elements, a {n}",
        da.len()
    );
    let args = KernelArgs::new()
        .buf_mut(da)
        .buf(a)
        .opt_buf(b)
        .f32(scale)
        .i64(n as i64);
    dev.launch(&registry::SQUARED_ERROR_BACKWARD_F32, elementwise(n), args)
}
