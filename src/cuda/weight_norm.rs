//! Launchers for `kernels/weight_norm.cu`: torch weight_norm, w = g · v / ||v||, with the norm over every
//! axis of v [d0, d1, d2] except `dim` (contracts of `crate::ops::weight_norm`; MERT's positional conv
//! uses dim 2 with v [768, 48, 128]). Forward overwrites w and norms; backward accumulates.

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Block of the one-block-per-slot kernels; slots and row groups per block of the column kernels
/// (must match ROW_THREADS, COL_SLOTS, COL_ROWS in the .cu file).
const ROW_THREADS: u32 = 256;
const COL_SLOTS: u32 = 8;
const COL_ROWS: u32 = 64;

/// v viewed as [outer, n, inner] with n = dims[dim] slots.
struct SlotView {
    outer: usize,
    n: usize,
    inner: usize,
}

impl SlotView {
    fn new(dims: [usize; 3], dim: usize) -> Result<SlotView> {
        ensure!(dim < 3, "weight_norm: dim {dim} of a 3-d weight");
        let view = SlotView {
            outer: dims[..dim].iter().product(),
            n: dims[dim],
            inner: dims[dim + 1..].iter().product(),
        };
        check::int("weight_norm slots", view.n)?;
        Ok(view)
    }

    fn total(&self) -> usize {
        self.outer * self.n * self.inner
    }

    /// The strided-column layout when a slot's elements are not contiguous runs.
    fn columns(&self) -> bool {
        self.inner == 1
    }

    fn config(&self) -> LaunchConfig {
        if self.columns() {
            LaunchConfig::new(
                (self.n.div_ceil(COL_SLOTS as usize) as u32, 1, 1),
                (COL_SLOTS, COL_ROWS, 1),
            )
        } else {
            LaunchConfig::new((self.n as u32, 1, 1), (ROW_THREADS, 1, 1))
        }
    }
}

/// w = g[s] · v / norms[s] with norms[s] = ||v restricted to slot s|| (w, v [d0, d1, d2]; g, norms
/// [dims[dim]]). Per-slot sums are f32 in a fixed order (the CPU op sums in f64).
pub fn weight_norm_forward(
    dev: &CudaDevice,
    w: &mut DeviceBuffer<f32>,
    norms: &mut DeviceBuffer<f32>,
    g: &DeviceBuffer<f32>,
    v: &DeviceBuffer<f32>,
    dims: [usize; 3],
    dim: usize,
) -> Result<()> {
    let s = SlotView::new(dims, dim)?;
    check::len("weight_norm v", v, s.total())?;
    check::len("weight_norm w", w, s.total())?;
    check::len("weight_norm g", g, s.n)?;
    check::len("weight_norm norms", norms, s.n)?;
    if s.n == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(w)
        .buf_mut(norms)
        .buf(g)
        .buf(v)
        .i64(s.outer as i64)
        .i32(s.n as i32);
    if s.columns() {
        dev.launch(&registry::WEIGHT_NORM_FORWARD_COLS_F32, s.config(), args)
    } else {
        let args = args.i64(s.inner as i64);
        dev.launch(&registry::WEIGHT_NORM_FORWARD_ROWS_F32, s.config(), args)
    }
}

/// With c_s = Σ_slot dw·v: dg[s] += c_s / norms[s]; dv += (g_s / n_s) dw - (g_s c_s / n_s³) v, from the
/// norms saved by the forward. Either output may be absent.
#[allow(clippy::too_many_arguments)]
pub fn weight_norm_backward(
    dev: &CudaDevice,
    dg: Option<&mut DeviceBuffer<f32>>,
    dv: Option<&mut DeviceBuffer<f32>>,
    dw: &DeviceBuffer<f32>,
    g: &DeviceBuffer<f32>,
    v: &DeviceBuffer<f32>,
    norms: &DeviceBuffer<f32>,
    dims: [usize; 3],
    dim: usize,
) -> Result<()> {
    let s = SlotView::new(dims, dim)?;
    check::len("weight_norm dw", dw, s.total())?;
    check::len("weight_norm v", v, s.total())?;
    check::len("weight_norm g", g, s.n)?;
    check::len("weight_norm norms", norms, s.n)?;
    if let Some(dg) = &dg {
        check::len("weight_norm dg", dg, s.n)?;
    }
    if let Some(dv) = &dv {
        check::len("weight_norm dv", dv, s.total())?;
    }
    if s.n == 0 || (dg.is_none() && dv.is_none()) {
        return Ok(());
    }
    let args = KernelArgs::new()
        .opt_buf_mut(dg)
        .opt_buf_mut(dv)
        .buf(dw)
        .buf(g)
        .buf(v)
        .buf(norms)
        .i64(s.outer as i64)
        .i32(s.n as i32);
    if s.columns() {
        dev.launch(&registry::WEIGHT_NORM_BACKWARD_COLS_F32, s.config(), args)
    } else {
        let args = args.i64(s.inner as i64);
        dev.launch(&registry::WEIGHT_NORM_BACKWARD_ROWS_F32, s.config(), args)
    }
}
