//! Launchers for `kernels/nce_loss.cu`: the fused MERT/HuBERT codebook NCE loss (cosine logits / T against
//! all C codewords of each codebook, cross entropy with the target code), contracts of
//! `crate::ops::nce_loss`. Forward overwrites the per-(row, codebook) loss and arg-max flag and saves the
//! log-sum-exp for the backward; backward accumulates into the gradient buffers it is given.
//!
//! Layouts as in the CPU op: `pred` [N, K*D] (codebook k uses columns k*D..(k+1)*D), `codewords` [K*C, D],
//! `targets` [N, K] (codes in 0..C), `loss`/`correct`/`lse` [N*K] row-major (index n*K + k).
//! `correct` is an i32 per pair (1 when the target's logit is the row's maximum): bool is not a device type.
//!
//! Targets are read back to the host and checked before any launch (a device-to-host copy of N*K i32),
//! so a label out of 0..C is an error, never an out-of-bounds read or a silently wrong loss.

use anyhow::{ensure, Result};

use super::check;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::ops::nce_loss::NceShape;

/// Warps per block, rows per block of the row kernels, codewords per block of the codeword kernel
/// (NCE_WARPS, NCE_ROWS, NCE_TILE in the .cu file).
const WARPS: u32 = 8;
const ROWS: usize = 32;
const TILE: usize = 32;
/// Dynamic shared memory available without opting in.
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Dynamic shared memory (bytes) of each kernel for codeword dim `d`.
fn forward_shared(d: usize) -> usize {
    4 * (ROWS * d + TILE * (d + 1))
}
fn backward_rows_shared(d: usize) -> usize {
    4 * (2 * ROWS * d + ROWS * TILE + TILE * (d + 1))
}
fn backward_codewords_shared(d: usize) -> usize {
    4 * (TILE * d + ROWS * d + ROWS * TILE)
}

/// Kernel-side integers of a checked shape.
struct Dims {
    n: i32,
    k: i32,
    c: i32,
    d: i32,
}

/// Checks the shape, the input buffer lengths and every target (read back to the host).
fn check_inputs(
    dev: &CudaDevice,
    pred: &DeviceBuffer<f32>,
    codewords: &DeviceBuffer<f32>,
    targets: &DeviceBuffer<i32>,
    s: &NceShape,
    temperature: f32,
) -> Result<Dims> {
    ensure!(
        s.codewords > 0 && s.dim > 0,
        "nce_loss: {} codewords of dim {} (both must be positive)",
        s.codewords,
        s.dim
    );
    ensure!(
        temperature.is_finite() && temperature > 0.0,
        "nce_loss: temperature {temperature} must be finite and positive"
    );
    ensure!(
        backward_rows_shared(s.dim) <= MAX_SHARED_BYTES,
        "nce_loss: dim {} needs {} B of shared memory per block (limit {MAX_SHARED_BYTES} B)",
        s.dim,
        backward_rows_shared(s.dim)
    );
    let (n, k, c, d) = (s.rows, s.codebooks, s.codewords, s.dim);
    check::len("nce_loss pred", pred, n * k * d)?;
    check::len("nce_loss codewords", codewords, k * c * d)?;
    check::len("nce_loss targets", targets, n * k)?;
    check::int("nce_loss rows*codebooks*codewords", n * k * c)?;
    check::int("nce_loss rows*codebooks*dim", n * k * d)?;
    let dims = Dims {
        n: check::int("nce_loss rows", n)?,
        k: check::int("nce_loss codebooks", k)?,
        c: check::int("nce_loss codewords", c)?,
        d: check::int("nce_loss dim", d)?,
    };
    if n * k > 0 {
        let host = dev.dtoh(targets)?;
        if let Some((i, &y)) = host[..n * k]
            .iter()
            .enumerate()
            .find(|(_, &y)| y < 0 || y as usize >= c)
        {
            anyhow::bail!(
                "nce_loss: target {y} at row {}, codebook {} is outside 0..{c}",
                i / k,
                i % k
            );
        }
    }
    Ok(dims)
}

/// Inverse clamped norms 1 / max(|E_i|, 1e-8) [K*C] of the codeword rows (scratch of one launcher call).
fn codeword_inv_norms(
    dev: &CudaDevice,
    codewords: &DeviceBuffer<f32>,
    dims: &Dims,
) -> Result<DeviceBuffer<f32>> {
    let rows = dims.k as usize * dims.c as usize;
    let mut inv_norms = dev.alloc::<f32>(rows)?;
    let cfg = LaunchConfig::new((rows.div_ceil(WARPS as usize) as u32, 1, 1), (32, WARPS, 1));
    let args = KernelArgs::new()
        .buf_mut(&mut inv_norms)
        .buf(codewords)
        .i32(check::int("nce_loss codebooks*codewords", rows)?)
        .i32(dims.d);
    dev.launch(&registry::NCE_CODEWORD_INV_NORMS_F32, cfg, args)?;
    Ok(inv_norms)
}

/// Grid of the row kernels: (row tiles, codebooks).
fn row_config(dims: &Dims, shared: usize) -> LaunchConfig {
    LaunchConfig::new(
        ((dims.n as usize).div_ceil(ROWS) as u32, dims.k as u32, 1),
        (32, WARPS, 1),
    )
    .with_shared(shared as u32)
}

/// Per (row, codebook) `loss[n*K+k] = lse - logit[target]` with logits cos(pred_k[n], E_k[c]) / temperature;
/// `correct[n*K+k]` = 1 when the target's logit is the maximum; `lse[n*K+k]` saved for
/// [`nce_loss_backward`]. All three are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn nce_loss_forward(
    dev: &CudaDevice,
    loss: &mut DeviceBuffer<f32>,
    correct: &mut DeviceBuffer<i32>,
    lse: &mut DeviceBuffer<f32>,
    pred: &DeviceBuffer<f32>,
    codewords: &DeviceBuffer<f32>,
    targets: &DeviceBuffer<i32>,
    s: &NceShape,
    temperature: f32,
) -> Result<()> {
    let dims = check_inputs(dev, pred, codewords, targets, s, temperature)?;
    let pairs = s.rows * s.codebooks;
    check::len("nce_loss loss", loss, pairs)?;
    check::len("nce_loss correct", correct, pairs)?;
    check::len("nce_loss lse", lse, pairs)?;
    if pairs == 0 {
        return Ok(());
    }
    let inv_norms = codeword_inv_norms(dev, codewords, &dims)?;
    let args = KernelArgs::new()
        .buf_mut(loss)
        .buf_mut(correct)
        .buf_mut(lse)
        .buf(pred)
        .buf(codewords)
        .buf(&inv_norms)
        .buf(targets)
        .i32(dims.n)
        .i32(dims.k)
        .i32(dims.c)
        .i32(dims.d)
        .f32(1.0 / temperature);
    dev.launch(
        &registry::NCE_LOSS_FORWARD_F32,
        row_config(&dims, forward_shared(s.dim)),
        args,
    )
}

/// Gradients of `dloss * sum(loss)` accumulated into `dpred` [N, K*D] and `dcodewords` [K*C, D] (each only
/// if given), from the `lse` saved by [`nce_loss_forward`] on the same inputs. Deterministic: the
/// codeword gradient goes through a [K, N, C] scratch of softmax weights summed over rows in a fixed
/// order (allocated only when `dcodewords` is given).
#[allow(clippy::too_many_arguments)]
pub fn nce_loss_backward(
    dev: &CudaDevice,
    dpred: Option<&mut DeviceBuffer<f32>>,
    dcodewords: Option<&mut DeviceBuffer<f32>>,
    dloss: f32,
    pred: &DeviceBuffer<f32>,
    codewords: &DeviceBuffer<f32>,
    targets: &DeviceBuffer<i32>,
    lse: &DeviceBuffer<f32>,
    s: &NceShape,
    temperature: f32,
) -> Result<()> {
    let dims = check_inputs(dev, pred, codewords, targets, s, temperature)?;
    check::len("nce_loss lse", lse, s.rows * s.codebooks)?;
    if let Some(dp) = &dpred {
        check::len("nce_loss dpred", dp, s.rows * s.codebooks * s.dim)?;
    }
    if let Some(dc) = &dcodewords {
        check::len("nce_loss dcodewords", dc, s.codebooks * s.codewords * s.dim)?;
    }
    if s.rows * s.codebooks == 0 || (dpred.is_none() && dcodewords.is_none()) {
        return Ok(());
    }
    let inv_norms = codeword_inv_norms(dev, codewords, &dims)?;
    let mut g = if dcodewords.is_some() {
        Some(dev.alloc::<f32>(s.codebooks * s.rows * s.codewords)?)
    } else {
        None
    };
    let args = KernelArgs::new()
        .opt_buf_mut(dpred)
        .opt_buf_mut(g.as_mut())
        .buf(pred)
        .buf(codewords)
        .buf(&inv_norms)
        .buf(targets)
        .buf(lse)
        .i32(dims.n)
        .i32(dims.k)
        .i32(dims.c)
        .i32(dims.d)
        .f32(1.0 / temperature)
        .f32(dloss);
    dev.launch(
        &registry::NCE_LOSS_BACKWARD_ROWS_F32,
        row_config(&dims, backward_rows_shared(s.dim)),
        args,
    )?;
    let (Some(dc), Some(g)) = (dcodewords, g.as_ref()) else {
        return Ok(());
    };
    let cfg = LaunchConfig::new(
        (s.codewords.div_ceil(TILE) as u32, dims.k as u32, 1),
        (32, WARPS, 1),
    )
    .with_shared(backward_codewords_shared(s.dim) as u32);
    let args = KernelArgs::new()
        .buf_mut(dc)
        .buf(g)
        .buf(pred)
        .buf(codewords)
        .buf(&inv_norms)
        .i32(dims.n)
        .i32(dims.k)
        .i32(dims.c)
        .i32(dims.d);
    dev.launch(&registry::NCE_LOSS_BACKWARD_CODEWORDS_F32, cfg, args)
}
