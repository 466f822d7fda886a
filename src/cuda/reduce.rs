//! Launchers for `kernels/reduce.cu`: the deterministic global L2 norm, column sums, and the split
//! policy and second pass shared by every split reduction (conv1d dweight/dbias, column sums, layer
//! norm dweight/dbias).

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

const NORM_THREADS: u32 = 256;
/// Blocks per tensor in the first pass: fixed by the largest tensor, so the summation order (and
/// the result) depends only on the tensor lengths.
const MAX_BLOCKS_PER_TENSOR: usize = 64;
/// Warps per block of `column_sum_f32` (`COL_WARPS`); each block owns 32 columns.
const COLUMN_WARPS: u32 = 8;
const PARTIALS_THREADS: u32 = 256;

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

/// How a long reduction is split into chunks, one block (per output tile) each, written as partials
/// and added in chunk order by [`sum_partials`]. A pure function of the shape, never of the device,
/// so the summation order, and the result, are the same on every GPU, run and scheduling order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// The kernel's resident blocks on a 132-SM H100/H200 (one full wave): the grid (output tiles
    /// times chunks) grows up to this, never past it, so no partial second wave trails the launch.
    pub target_blocks: usize,
    /// The shortest chunk worth its own block (reduction steps: positions, rows).
    pub min_chunk: usize,
}

impl SplitPolicy {
    /// (S chunks, chunk length) for a reduction of `len` steps on a grid of `blocks` output tiles:
    /// S = floor(target / blocks), lowered so that every chunk keeps `min_chunk` steps (S = 1 below
    /// 2 min_chunk or from blocks > target / 2 on), chunk = ceil(len / S), and S = ceil(len / chunk)
    /// so that no chunk is empty (the last one is shorter when chunk does not divide len).
    pub fn split(&self, blocks: usize, len: usize) -> (usize, usize) {
        let want = (self.target_blocks / blocks.max(1)).max(1);
        let most = (len / self.min_chunk.max(1)).max(1);
        let chunk = len.div_ceil(want.min(most)).max(1);
        (len.div_ceil(chunk).max(1), chunk)
    }
}

/// Column reductions (column sums, layer norm dweight/dbias): bandwidth-bound, 256-thread blocks
/// with a few registers, so 8 per SM fit: 8 x 132 blocks keep every SM full; chunks of >= 64 rows.
pub const COLUMN_SPLIT: SplitPolicy = SplitPolicy {
    target_blocks: 8 * 132,
    min_chunk: 64,
};

/// out[i] (= or +=) sum over s < chunks of partials[offset + s*n + i], s in increasing order (the
/// second pass of a split reduction).
pub(crate) fn sum_partials(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    partials: &DeviceBuffer<f32>,
    offset: usize,
    chunks: usize,
    accumulate: bool,
) -> Result<()> {
    let n = out.len();
    check::len("sum_partials partials", partials, offset + chunks * n)?;
    if n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .u64(partials.device_ptr_at(offset)?)
        .i32(check::int("sum_partials n", n)?)
        .i32(check::int("sum_partials chunks", chunks)?)
        .i32(accumulate as i32);
    let cfg = LaunchConfig::for_elements(n, PARTIALS_THREADS, 4096);
    dev.launch(&registry::SUM_PARTIALS_F32, cfg, args)
}

/// out[c] (= or += if `accumulate`) sum over r of x[r, c] for x [rows, cols], split by [`COLUMN_SPLIT`].
pub fn column_sum(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    column_sum_with(dev, out, x, rows, cols, accumulate, COLUMN_SPLIT)
}

/// [`column_sum`] with an explicit split policy (tests force small chunks).
pub fn column_sum_with(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    rows: usize,
    cols: usize,
    accumulate: bool,
    split: SplitPolicy,
) -> Result<()> {
    check::len("column_sum x", x, rows * cols)?;
    check::len("column_sum out", out, cols)?;
    if cols == 0 {
        return Ok(());
    }
    let tiles = cols.div_ceil(32);
    let (chunks, chunk) = split.split(tiles, rows);
    ensure!(chunks <= 65535, "column_sum: {chunks} chunks");
    let cfg = LaunchConfig::new(
        (check::int("column tiles", tiles)? as u32, chunks as u32, 1),
        (32, COLUMN_WARPS, 1),
    );
    let mut partials = if chunks > 1 {
        Some(dev.alloc::<f32>(chunks * cols)?)
    } else {
        None
    };
    let args = KernelArgs::new()
        .buf_mut(out)
        .opt_buf_mut(partials.as_mut())
        .buf(x)
        .i32(check::int("rows", rows)?)
        .i32(check::int("cols", cols)?)
        .i32(check::int("column_sum chunk", chunk)?)
        .i32(accumulate as i32);
    dev.launch(&registry::COLUMN_SUM_F32, cfg, args)?;
    match &partials {
        Some(p) => sum_partials(dev, out, p, 0, chunks, accumulate),
        None => Ok(()),
    }
}
