//! Launchers for `kernels/conv1d.cu`: nn.Conv1d forward and backward (stride, zero padding, groups),
//! f32, with the contracts of `crate::ops::conv1d` (forward overwrites, backward accumulates).
//! Forward, dweight and dx (from 16 input channels per group) are implicit-im2col GEMM tiles (grid:
//! column tiles, row tiles, groups); dx for fewer channels is one thread per input element, dbias
//! one block per channel.

use anyhow::{ensure, Result};

use super::{check, registry};
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::ops::conv1d::Conv1dShape;

const THREADS: u32 = 256;
/// Cap of the grid-stride launches (blocks).
const MAX_BLOCKS: u32 = 1 << 16;
/// Output tile edge of the GEMM kernels (`TILE` in kernels/conv1d.cu).
const TILE: usize = 64;
/// dx as a GEMM from this many input channels per group on; below, the 64-row tile would be mostly
/// idle and the direct kernel (one thread per input element) is cheaper.
const DX_GEMM_MIN_CHANNELS: usize = 16;
/// The driver's limit on grid.y and grid.z.
const MAX_GRID_YZ: usize = 65535;

/// Grid of a GEMM kernel: `cols` x `rows` output per group, one TILE x TILE tile per block.
fn tile_grid(cols: usize, rows: usize, groups: usize) -> Result<LaunchConfig> {
    let (gx, gy) = (cols.div_ceil(TILE), rows.div_ceil(TILE));
    ensure!(
        gy <= MAX_GRID_YZ && groups <= MAX_GRID_YZ,
        "conv1d: {rows} channels per group or {groups} groups exceed the grid limits"
    );
    Ok(LaunchConfig::new(
        (
            check::int("conv1d column tiles", gx)? as u32,
            gy as u32,
            groups as u32,
        ),
        (THREADS, 1, 1),
    ))
}

/// The shape checks of `Conv1dShape` as errors; returns the int arguments shared by every kernel:
/// B, Cin, Cout, Lin, Lout, K, stride, pad, G.
fn dims(s: &Conv1dShape) -> Result<[i32; 9]> {
    ensure!(
        s.groups > 0 && s.stride > 0 && s.kernel > 0,
        "conv1d: bad shape {s:?}"
    );
    ensure!(
        s.in_channels.is_multiple_of(s.groups) && s.out_channels.is_multiple_of(s.groups),
        "conv1d: channels not divisible by groups in {s:?}"
    );
    ensure!(
        s.in_len + 2 * s.padding >= s.kernel,
        "conv1d: input shorter than the kernel in {s:?}"
    );
    let lout = s.out_len();
    check::int("conv1d x size", s.batch * s.in_channels * s.in_len)?;
    check::int("conv1d out size", s.batch * s.out_channels * lout)?;
    check::int(
        "conv1d weight size",
        s.out_channels * s.in_channels * s.kernel,
    )?;
    check::int("conv1d batch*out_len", s.batch * lout)?;
    Ok([
        check::int("conv1d batch", s.batch)?,
        check::int("conv1d in_channels", s.in_channels)?,
        check::int("conv1d out_channels", s.out_channels)?,
        check::int("conv1d in_len", s.in_len)?,
        check::int("conv1d out_len", lout)?,
        check::int("conv1d kernel", s.kernel)?,
        check::int("conv1d stride", s.stride)?,
        check::int("conv1d padding", s.padding)?,
        check::int("conv1d groups", s.groups)?,
    ])
}

fn with_dims<'a>(mut args: KernelArgs<'a>, d: &[i32]) -> KernelArgs<'a> {
    for &v in d {
        args = args.i32(v);
    }
    args
}

/// out [B, Cout, Lout] = conv1d(x [B, Cin, Lin], weight [Cout, Cin/G, K]) (+ bias [Cout]).
pub fn conv1d_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f32>>,
    s: &Conv1dShape,
) -> Result<()> {
    let d = dims(s)?;
    let n = s.batch * s.out_channels * s.out_len();
    check::len("conv1d x", x, s.batch * s.in_channels * s.in_len)?;
    check::len(
        "conv1d weight",
        weight,
        s.out_channels * (s.in_channels / s.groups) * s.kernel,
    )?;
    check::len("conv1d out", out, n)?;
    if let Some(b) = bias {
        check::len("conv1d bias", b, s.out_channels)?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf(x)
        .buf(weight)
        .opt_buf(bias);
    dev.launch(
        &registry::CONV1D_FORWARD_F32,
        tile_grid(s.batch * s.out_len(), s.out_channels / s.groups, s.groups)?,
        with_dims(args, &d),
    )
}

/// Accumulates dx, dweight, dbias (each only if given).
#[allow(clippy::too_many_arguments)]
pub fn conv1d_backward(
    dev: &CudaDevice,
    dx: Option<&mut DeviceBuffer<f32>>,
    dweight: Option<&mut DeviceBuffer<f32>>,
    dbias: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    s: &Conv1dShape,
) -> Result<()> {
    let d = dims(s)?;
    let (nx, nw) = (
        s.batch * s.in_channels * s.in_len,
        s.out_channels * (s.in_channels / s.groups) * s.kernel,
    );
    check::len("conv1d dout", dout, s.batch * s.out_channels * s.out_len())?;
    check::len("conv1d x", x, nx)?;
    check::len("conv1d weight", weight, nw)?;
    if let Some(dx) = dx {
        check::len("conv1d dx", dx, nx)?;
        if nx > 0 {
            let args = with_dims(KernelArgs::new().buf_mut(dx).buf(dout).buf(weight), &d);
            let cin_g = s.in_channels / s.groups;
            if cin_g >= DX_GEMM_MIN_CHANNELS {
                // One column range per stride phase (kernel comment); each phase has at most
                // ceil(Lin / stride) positions per batch item.
                let mut grid = tile_grid(s.batch * s.in_len.div_ceil(s.stride), cin_g, s.groups)?;
                grid.grid.0 =
                    check::int("conv1d dx column tiles", grid.grid.0 as usize * s.stride)? as u32;
                dev.launch(&registry::CONV1D_BACKWARD_DX_GEMM_F32, grid, args)?;
            } else {
                let grid = LaunchConfig::for_elements(nx, THREADS, MAX_BLOCKS);
                dev.launch(&registry::CONV1D_BACKWARD_DX_F32, grid, args)?;
            }
        }
    }
    if let Some(dw) = dweight {
        check::len("conv1d dweight", dw, nw)?;
        if nw > 0 {
            let args = KernelArgs::new().buf_mut(dw).buf(dout).buf(x);
            dev.launch(
                &registry::CONV1D_BACKWARD_DWEIGHT_F32,
                tile_grid(
                    (s.in_channels / s.groups) * s.kernel,
                    s.out_channels / s.groups,
                    s.groups,
                )?,
                with_dims(args, &d),
            )?;
        }
    }
    if let Some(db) = dbias {
        check::len("conv1d dbias", db, s.out_channels)?;
        if s.out_channels > 0 {
            let args = KernelArgs::new()
                .buf_mut(db)
                .buf(dout)
                .i32(d[0])
                .i32(d[2])
                .i32(d[4]);
            dev.launch(
                &registry::CONV1D_BACKWARD_DBIAS_F32,
                LaunchConfig::new((s.out_channels as u32, 1, 1), (THREADS, 1, 1)),
                args,
            )?;
        }
    }
    Ok(())
}
