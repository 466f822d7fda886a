//! Launchers for `kernels/gemm_tc.cu`: mixed-precision tensor-core GEMM (bf16 or f16 inputs, f32
//! accumulation and output) and the f32 <-> bf16/f16 casts (round to nearest even). Half-precision
//! tensors live in `DeviceBuffer<u16>` as raw bits (`half::bf16::to_bits` / `half::f16::to_bits`).

use anyhow::{ensure, Result};

use super::check;
use super::elementwise::{MAX_BLOCKS, THREADS};
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, Kernel, KernelArgs, LaunchConfig};

/// Output tile edge and threads per block of `gemm_tc_*` (see the kernel's header comment).
const TILE: usize = 64;
const TC_THREADS: u32 = 128;

/// The 16-bit input format of a tensor-core GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfKind {
    Bf16,
    F16,
}

impl HalfKind {
    fn gemm_kernel(self) -> &'static Kernel {
        match self {
            HalfKind::Bf16 => &registry::GEMM_TC_BF16,
            HalfKind::F16 => &registry::GEMM_TC_F16,
        }
    }
}

/// C[m,n] (= or += if `accumulate`) op(A)·op(B) (+ bias[n]) with f32 accumulation. A is stored
/// [m,k] (or [k,m] when `a_trans`), B is [k,n] (or [n,k] when `b_trans`), row-major, as `kind` bits.
/// Same contract as [`super::gemm::sgemm`]: nn.Linear forward is `b_trans`, dX = dY·W is neither,
/// dW = dY^T·X is `a_trans`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tc(
    dev: &CudaDevice,
    kind: HalfKind,
    m: usize,
    n: usize,
    k: usize,
    a: &DeviceBuffer<u16>,
    a_trans: bool,
    b: &DeviceBuffer<u16>,
    b_trans: bool,
    c: &mut DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f32>>,
    accumulate: bool,
) -> Result<()> {
    check::len("gemm_tc A", a, m * k)?;
    check::len("gemm_tc B", b, k * n)?;
    check::len("gemm_tc C", c, m * n)?;
    if let Some(bias) = bias {
        check::len("gemm_tc bias", bias, n)?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // m-tiles on grid.x (up to 2^31 - 1): rows = batch x frames is the large dimension.
    let grid_y = n.div_ceil(TILE);
    ensure!(
        grid_y <= 65535,
        "gemm_tc: n = {n} needs {grid_y} column tiles (grid.y limit 65535)"
    );
    let cfg = LaunchConfig::new(
        (m.div_ceil(TILE) as u32, grid_y as u32, 1),
        (TC_THREADS, 1, 1),
    );
    let args = KernelArgs::new()
        .buf_mut(c)
        .buf(a)
        .buf(b)
        .opt_buf(bias)
        .i32(check::int("gemm_tc m", m)?)
        .i32(check::int("gemm_tc n", n)?)
        .i32(check::int("gemm_tc k", k)?)
        .i32(a_trans as i32)
        .i32(b_trans as i32)
        .i32(accumulate as i32);
    dev.launch(kind.gemm_kernel(), cfg, args)
}

/// out[i] = x[i] rounded to `kind` (nearest even; overflow to ±inf, NaN stays NaN).
pub fn cast_to_half(
    dev: &CudaDevice,
    kind: HalfKind,
    out: &mut DeviceBuffer<u16>,
    x: &DeviceBuffer<f32>,
) -> Result<()> {
    let n = x.len();
    ensure!(
        out.len() == n,
        "cast_to_half ({kind:?}): {n} inputs, output holds {}",
        out.len()
    );
    let kernel = match kind {
        HalfKind::Bf16 => &registry::CAST_F32_TO_BF16,
        HalfKind::F16 => &registry::CAST_F32_TO_F16,
    };
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        kernel,
        cfg,
        KernelArgs::new().buf_mut(out).buf(x).i64(n as i64),
    )
}

/// out[i] = x[i] widened from `kind` to f32 (exact).
pub fn cast_from_half(
    dev: &CudaDevice,
    kind: HalfKind,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<u16>,
) -> Result<()> {
    let n = x.len();
    ensure!(
        out.len() == n,
        "cast_from_half ({kind:?}): {n} inputs, output holds {}",
        out.len()
    );
    let kernel = match kind {
        HalfKind::Bf16 => &registry::CAST_BF16_TO_F32,
        HalfKind::F16 => &registry::CAST_F16_TO_F32,
    };
    let cfg = LaunchConfig::for_elements(n, THREADS, MAX_BLOCKS);
    dev.launch(
        kernel,
        cfg,
        KernelArgs::new().buf_mut(out).buf(x).i64(n as i64),
    )
}

/// `x` rounded to half precision in a new buffer.
pub fn to_half(
    dev: &CudaDevice,
    kind: HalfKind,
    x: &DeviceBuffer<f32>,
) -> Result<DeviceBuffer<u16>> {
    let mut h = dev.alloc::<u16>(x.len())?;
    cast_to_half(dev, kind, &mut h, x)?;
    Ok(h)
}

/// Mixed-precision nn.Linear: out[rows, out_f] = half(x) · half(weight)^T (+ bias), f32 accumulation
/// and output (the f32 master weights stay untouched; the half copies live for this call only).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_tc(
    dev: &CudaDevice,
    kind: HalfKind,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f32>>,
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> Result<()> {
    let (xh, wh) = (to_half(dev, kind, x)?, to_half(dev, kind, weight)?);
    gemm_tc(
        dev,
        kind,
        rows,
        out_features,
        in_features,
        &xh,
        false,
        &wh,
        true,
        out,
        bias,
        false,
    )
}

/// Mixed-precision linear backward: dx += half(dout)·half(W), dweight += half(dout)^T·half(x) on
/// tensor cores, dbias += column sums of the f32 dout (each only if given).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_tc(
    dev: &CudaDevice,
    kind: HalfKind,
    dx: Option<&mut DeviceBuffer<f32>>,
    dweight: Option<&mut DeviceBuffer<f32>>,
    dbias: Option<&mut DeviceBuffer<f32>>,
    dout: &DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> Result<()> {
    if dx.is_none() && dweight.is_none() && dbias.is_none() {
        return Ok(());
    }
    let dh = to_half(dev, kind, dout)?;
    if let Some(dx) = dx {
        let wh = to_half(dev, kind, weight)?;
        gemm_tc(
            dev,
            kind,
            rows,
            in_features,
            out_features,
            &dh,
            false,
            &wh,
            false,
            dx,
            None,
            true,
        )?;
    }
    if let Some(dw) = dweight {
        let xh = to_half(dev, kind, x)?;
        gemm_tc(
            dev,
            kind,
            out_features,
            in_features,
            rows,
            &dh,
            true,
            &xh,
            false,
            dw,
            None,
            true,
        )?;
    }
    if let Some(db) = dbias {
        super::reduce::column_sum(dev, db, dout, rows, out_features, true)?;
    }
    Ok(())
}
