//! Launchers for `kernels/conv1d.cu`: nn.Conv1d forward and backward (stride, zero padding, groups),
//! f32, with the contracts of `crate::ops::conv1d` (forward overwrites, backward accumulates).
//! Forward, dweight and dx (from 16 input channels per group) are implicit-im2col GEMM tiles (grid:
//! column tiles, row tiles, groups); dx for fewer channels is one thread per input element, dbias
//! one block per channel. dweight for at most 16 taps per group (the waveform layer) is a
//! bandwidth-bound reduction of its own. dweight and dbias split their reduction over B*Lout into
//! chunks when the grid would not fill the GPU ([`SplitPolicy`]): partials in a workspace from the
//! device's pool, added in chunk order (deterministic, no atomics).

use anyhow::{ensure, Result};

use super::check;
use super::reduce::{sum_partials, SplitPolicy};
use crate::device::registry;
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
/// dweight by the small-im2col kernel up to this many taps per group (`SW_MAX`).
const DWEIGHT_SMALL_MAX_TAPS: usize = 16;
/// Output channels per block of the small-im2col dweight kernel (8 warps x `SW_CH`).
const DWEIGHT_SMALL_CHANNELS: usize = 16;

/// Tiled dweight: 61-64 registers and 8.4 KB shared per 256-thread block, 4 blocks per SM: 4 x 132
/// resident; a chunk of >= 1024 positions (64 steps of 16) per block so the tile's store and the
/// second pass stay negligible.
pub const DWEIGHT_SPLIT: SplitPolicy = SplitPolicy {
    target_blocks: 4 * 132,
    min_chunk: 1024,
};
/// Small-im2col dweight: bandwidth-bound, 128 registers (launch bound), 2 blocks per SM: 2 x 132;
/// chunks of >= 2048 positions (16 steps of 128).
pub const DWEIGHT_SMALL_SPLIT: SplitPolicy = SplitPolicy {
    target_blocks: 2 * 132,
    min_chunk: 2048,
};
/// dbias: one 256-thread block per (channel, chunk) with 20 registers, 8 per SM; chunks of >= 4096
/// positions.
pub const DBIAS_SPLIT: SplitPolicy = SplitPolicy {
    target_blocks: 8 * 132,
    min_chunk: 4096,
};

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

/// Accumulates dx, dweight, dbias (each only if given); dweight and dbias split by
/// [`DWEIGHT_SPLIT`] / [`DWEIGHT_SMALL_SPLIT`] / [`DBIAS_SPLIT`].
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
    conv1d_backward_with(dev, dx, dweight, dbias, dout, x, weight, s, None)
}

/// [`conv1d_backward`] with one split policy for dweight and dbias instead of their defaults
/// (`None`); tests force small chunks with it.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_backward_with(
    dev: &CudaDevice,
    dx: Option<&mut DeviceBuffer<f32>>,
    dweight: Option<&mut DeviceBuffer<f32>>,
    dbias: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    s: &Conv1dShape,
    split: Option<SplitPolicy>,
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
            dweight_split(dev, dw, dout, x, s, &d, split)?;
        }
    }
    if let Some(db) = dbias {
        check::len("conv1d dbias", db, s.out_channels)?;
        if s.out_channels > 0 {
            dbias_split(dev, db, dout, s, &d, split.unwrap_or(DBIAS_SPLIT))?;
        }
    }
    Ok(())
}

/// dweight += dout . col^T: the tiled GEMM kernel, or the small-im2col one for <= 16 taps per group;
/// either over S chunks of B*Lout with a [S, Cout, cin_g*K] workspace when S > 1.
fn dweight_split(
    dev: &CudaDevice,
    dw: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    s: &Conv1dShape,
    d: &[i32; 9],
    split: Option<SplitPolicy>,
) -> Result<()> {
    let (cin_g, cout_g) = (s.in_channels / s.groups, s.out_channels / s.groups);
    let taps = cin_g * s.kernel;
    let len = s.batch * s.out_len();
    let small = taps <= DWEIGHT_SMALL_MAX_TAPS;
    let (kernel, mut grid, policy) = if small {
        let gx = cout_g.div_ceil(DWEIGHT_SMALL_CHANNELS);
        let cfg = LaunchConfig::new(
            (
                check::int("conv1d dweight channel blocks", gx)? as u32,
                1,
                s.groups as u32,
            ),
            (32, THREADS / 32, 1),
        );
        (
            &registry::CONV1D_BACKWARD_DWEIGHT_SMALL_F32,
            cfg,
            DWEIGHT_SMALL_SPLIT,
        )
    } else {
        let cfg = tile_grid(taps, cout_g, s.groups)?;
        (&registry::CONV1D_BACKWARD_DWEIGHT_F32, cfg, DWEIGHT_SPLIT)
    };
    let (gx, gy, gz) = (
        grid.grid.0 as usize,
        grid.grid.1 as usize,
        grid.grid.2 as usize,
    );
    let (chunks, chunk) = split.unwrap_or(policy).split(gx * gy * gz, len);
    // Chunks go to grid.y (small kernel) or multiply grid.z (tiled: z = chunk * G + group).
    let (y, z) = if small {
        (chunks, gz)
    } else {
        (gy, gz * chunks)
    };
    ensure!(
        y <= MAX_GRID_YZ && z <= MAX_GRID_YZ,
        "conv1d dweight: {chunks} chunks x {} groups exceed the grid limits",
        s.groups
    );
    grid.grid = (grid.grid.0, y as u32, z as u32);
    let mut partials = if chunks > 1 {
        Some(dev.alloc::<f32>(chunks * dw.len())?)
    } else {
        None
    };
    let args = KernelArgs::new()
        .buf_mut(dw)
        .opt_buf_mut(partials.as_mut())
        .buf(dout)
        .buf(x);
    let args = with_dims(args, d).i32(check::int("conv1d dweight chunk", chunk)?);
    dev.launch(kernel, grid, args)?;
    match &partials {
        Some(p) => sum_partials(dev, dw, p, 0, chunks, true),
        None => Ok(()),
    }
}

/// dbias[co] += sum over B*Lout of dout[b, co, t]: one block per (channel, chunk); a [S, Cout]
/// workspace when S > 1.
fn dbias_split(
    dev: &CudaDevice,
    db: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    s: &Conv1dShape,
    d: &[i32; 9],
    split: SplitPolicy,
) -> Result<()> {
    let (chunks, chunk) = split.split(s.out_channels, s.batch * s.out_len());
    ensure!(chunks <= MAX_GRID_YZ, "conv1d dbias: {chunks} chunks");
    let mut partials = if chunks > 1 {
        Some(dev.alloc::<f32>(chunks * s.out_channels)?)
    } else {
        None
    };
    let args = KernelArgs::new()
        .buf_mut(db)
        .opt_buf_mut(partials.as_mut())
        .buf(dout)
        .i32(d[0])
        .i32(d[2])
        .i32(d[4])
        .i32(check::int("conv1d dbias chunk", chunk)?);
    let cfg = LaunchConfig::new((d[2] as u32, chunks as u32, 1), (THREADS, 1, 1));
    dev.launch(&registry::CONV1D_BACKWARD_DBIAS_F32, cfg, args)?;
    match &partials {
        Some(p) => sum_partials(dev, db, p, 0, chunks, true),
        None => Ok(()),
    }
}
