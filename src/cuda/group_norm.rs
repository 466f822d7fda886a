//! Launchers for `kernels/group_norm.cu` (contracts of `crate::ops::group_norm`: forward overwrites
//! out, mean, rstd [B*G]; backward accumulates dx, dweight, dbias).

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

const THREADS: u32 = 256;

/// Checks channels % groups and the 32-bit index range; returns (C, L, G) as kernel ints.
fn dims(batch: usize, channels: usize, len: usize, groups: usize) -> Result<(i32, i32, i32)> {
    ensure!(
        groups > 0 && channels.is_multiple_of(groups),
        "group_norm: {channels} channels not divisible into {groups} groups"
    );
    check::int("group_norm x size", batch * channels * len)?;
    Ok((
        check::int("group_norm channels", channels)?,
        check::int("group_norm len", len)?,
        check::int("group_norm groups", groups)?,
    ))
}

fn block_config(blocks: usize) -> LaunchConfig {
    LaunchConfig::new((blocks as u32, 1, 1), (THREADS, 1, 1))
}

/// out = (x - mean) * rstd * weight[c] + bias[c] per (b, group) of x [B, C, L].
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    mean: &mut DeviceBuffer<f32>,
    rstd: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    bias: &DeviceBuffer<f32>,
    batch: usize,
    channels: usize,
    len: usize,
    groups: usize,
    eps: f32,
) -> Result<()> {
    let (c, l, g) = dims(batch, channels, len, groups)?;
    let n = batch * channels * len;
    check::len("group_norm x", x, n)?;
    check::len("group_norm out", out, n)?;
    check::len("group_norm mean", mean, batch * groups)?;
    check::len("group_norm rstd", rstd, batch * groups)?;
    check::len("group_norm weight", weight, channels)?;
    check::len("group_norm bias", bias, channels)?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf_mut(mean)
        .buf_mut(rstd)
        .buf(x)
        .buf(weight)
        .buf(bias)
        .i32(c)
        .i32(l)
        .i32(g)
        .f32(eps);
    dev.launch(
        &registry::GROUP_NORM_FORWARD_F32,
        block_config(batch * groups),
        args,
    )
}

/// Accumulates dx, dweight, dbias (each only if given) from the saved mean and rstd.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dev: &CudaDevice,
    dx: Option<&mut DeviceBuffer<f32>>,
    dweight: Option<&mut DeviceBuffer<f32>>,
    dbias: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    mean: &DeviceBuffer<f32>,
    rstd: &DeviceBuffer<f32>,
    batch: usize,
    channels: usize,
    len: usize,
    groups: usize,
) -> Result<()> {
    let (c, l, g) = dims(batch, channels, len, groups)?;
    let n = batch * channels * len;
    check::len("group_norm dout", dout, n)?;
    check::len("group_norm x", x, n)?;
    check::len("group_norm weight", weight, channels)?;
    check::len("group_norm mean", mean, batch * groups)?;
    check::len("group_norm rstd", rstd, batch * groups)?;
    if n == 0 {
        return Ok(());
    }
    if let Some(dx) = dx {
        check::len("group_norm dx", dx, n)?;
        let args = KernelArgs::new()
            .buf_mut(dx)
            .buf(dout)
            .buf(x)
            .buf(weight)
            .buf(mean)
            .buf(rstd)
            .i32(c)
            .i32(l)
            .i32(g);
        dev.launch(
            &registry::GROUP_NORM_BACKWARD_DX_F32,
            block_config(batch * groups),
            args,
        )?;
    }
    if dweight.is_none() && dbias.is_none() {
        return Ok(());
    }
    if let Some(dw) = &dweight {
        check::len("group_norm dweight", dw, channels)?;
    }
    if let Some(db) = &dbias {
        check::len("group_norm dbias", db, channels)?;
    }
    let args = KernelArgs::new()
        .opt_buf_mut(dweight)
        .opt_buf_mut(dbias)
        .buf(dout)
        .buf(x)
        .buf(mean)
        .buf(rstd)
        .i32(check::int("group_norm batch", batch)?)
        .i32(c)
        .i32(l)
        .i32(g);
    dev.launch(
        &registry::GROUP_NORM_BACKWARD_PARAMS_F32,
        block_config(channels),
        args,
    )
}
