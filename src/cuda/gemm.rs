//! Launchers for `kernels/gemm.cu`: tiled f32 GEMM with transposed variants and a bias epilogue, and
//! nn.Linear forward/backward on top of it (same contracts as `crate::ops::{gemm, linear}`).

use anyhow::Result;

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Output tile edge and threads per block of `gemm_f32_*`.
const TILE: usize = 64;
const THREADS: u32 = 256;

/// C[m,n] (= or += if `accumulate`) op(A)·op(B) (+ bias[n]). A is stored [m,k] (or [k,m] when
/// `a_trans`), B is [k,n] (or [n,k] when `b_trans`), all row-major.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    dev: &CudaDevice,
    m: usize,
    n: usize,
    k: usize,
    a: &DeviceBuffer<f32>,
    a_trans: bool,
    b: &DeviceBuffer<f32>,
    b_trans: bool,
    bias: Option<&DeviceBuffer<f32>>,
    c: &mut DeviceBuffer<f32>,
    accumulate: bool,
) -> Result<()> {
    check::len("gemm A", a, m * k)?;
    check::len("gemm B", b, k * n)?;
    check::len("gemm C", c, m * n)?;
    if let Some(bias) = bias {
        check::len("gemm bias", bias, n)?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let kernel = match (a_trans, b_trans) {
        (false, false) => &registry::GEMM_F32_NN,
        (false, true) => &registry::GEMM_F32_NT,
        (true, false) => &registry::GEMM_F32_TN,
        (true, true) => &registry::GEMM_F32_TT,
    };
    let cfg = LaunchConfig::new(
        (n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1),
        (THREADS, 1, 1),
    );
    let args = KernelArgs::new()
        .buf_mut(c)
        .buf(a)
        .buf(b)
        .opt_buf(bias)
        .i32(check::int("m", m)?)
        .i32(check::int("n", n)?)
        .i32(check::int("k", k)?)
        .i32(accumulate as i32);
    dev.launch(kernel, cfg, args)
}

/// nn.Linear: out[rows, out_f] = x[rows, in_f] · weight[out_f, in_f]^T (+ bias).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    x: &DeviceBuffer<f32>,
    weight: &DeviceBuffer<f32>,
    bias: Option<&DeviceBuffer<f32>>,
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> Result<()> {
    sgemm(
        dev,
        rows,
        out_features,
        in_features,
        x,
        false,
        weight,
        true,
        bias,
        out,
        false,
    )
}

/// Accumulates dx += dout·W, dweight += dout^T·x, dbias += column sums of dout (each only if given).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dev: &CudaDevice,
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
    if let Some(dx) = dx {
        sgemm(
            dev,
            rows,
            in_features,
            out_features,
            dout,
            false,
            weight,
            false,
            None,
            dx,
            true,
        )?;
    }
    if let Some(dw) = dweight {
        // dout is stored [rows, out_f] = op(A) transposed with k = rows.
        sgemm(
            dev,
            out_features,
            in_features,
            rows,
            dout,
            true,
            x,
            false,
            None,
            dw,
            true,
        )?;
    }
    if let Some(db) = dbias {
        super::reduce::column_sum(dev, db, dout, rows, out_features, true)?;
    }
    Ok(())
}
