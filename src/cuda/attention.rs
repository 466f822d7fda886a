//! Launchers for `kernels/attention.cu`: fused flash-style attention forward and backward, f32,
//! q/k/v/out [B, T, H*D] with D <= 64 (contracts of `crate::ops::attention`: forward overwrites
//! out and lse [B, H, T], backward accumulates into dq, dk, dv).

use anyhow::{ensure, Result};

use super::{check, registry};
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::ops::attention::AttentionShape;

/// Rows (warps) per block and the largest head dim of the kernels.
const WARPS: u32 = 8;
pub const MAX_HEAD_DIM: usize = 64;

struct Dims {
    t: i32,
    h: i32,
    d: i32,
}

/// Checks the shape and the buffer lengths shared by forward and backward.
fn check_shape(s: &AttentionShape, key_valid: Option<&DeviceBuffer<u8>>) -> Result<Dims> {
    ensure!(
        s.head_dim <= MAX_HEAD_DIM,
        "attention: head_dim {} > {MAX_HEAD_DIM} is not supported by the CUDA kernels",
        s.head_dim
    );
    if let Some(kv) = key_valid {
        check::len("attention key_valid", kv, s.batch * s.seq)?;
    }
    check::int("attention B*T*H*D", s.batch * s.seq * s.heads * s.head_dim)?;
    check::int("attention B*H", s.batch * s.heads)?;
    Ok(Dims {
        t: check::int("attention seq", s.seq)?,
        h: check::int("attention heads", s.heads)?,
        d: check::int("attention head_dim", s.head_dim)?,
    })
}

fn config(s: &AttentionShape) -> LaunchConfig {
    LaunchConfig::new(
        (
            s.seq.div_ceil(WARPS as usize) as u32,
            (s.batch * s.heads) as u32,
            1,
        ),
        (32, WARPS, 1),
    )
}

fn is_empty(s: &AttentionShape) -> bool {
    s.batch == 0 || s.seq == 0 || s.heads == 0 || s.head_dim == 0
}

/// out = softmax(scale Q Kᵀ, masked keys excluded) V per head; lse [B, H, T] saved for backward.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    dev: &CudaDevice,
    out: &mut DeviceBuffer<f32>,
    lse: &mut DeviceBuffer<f32>,
    q: &DeviceBuffer<f32>,
    k: &DeviceBuffer<f32>,
    v: &DeviceBuffer<f32>,
    key_valid: Option<&DeviceBuffer<u8>>,
    s: &AttentionShape,
    scale: f32,
) -> Result<()> {
    let dims = check_shape(s, key_valid)?;
    let n = s.batch * s.seq * s.heads * s.head_dim;
    for (what, b) in [("attention q", q), ("attention k", k), ("attention v", v)] {
        check::len(what, b, n)?;
    }
    check::len("attention out", out, n)?;
    check::len("attention lse", lse, s.batch * s.heads * s.seq)?;
    if is_empty(s) {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(out)
        .buf_mut(lse)
        .buf(q)
        .buf(k)
        .buf(v)
        .opt_buf(key_valid)
        .i32(dims.t)
        .i32(dims.h)
        .i32(dims.d)
        .f32(scale);
    dev.launch(&registry::ATTENTION_FORWARD_F32, config(s), args)
}

/// Accumulates dq, dk, dv. `delta` [B, H, T] is scratch (overwritten with rowsum(dO ∘ O)).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dev: &CudaDevice,
    dq: &mut DeviceBuffer<f32>,
    dk: &mut DeviceBuffer<f32>,
    dv: &mut DeviceBuffer<f32>,
    delta: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    q: &DeviceBuffer<f32>,
    k: &DeviceBuffer<f32>,
    v: &DeviceBuffer<f32>,
    out: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
    key_valid: Option<&DeviceBuffer<u8>>,
    s: &AttentionShape,
    scale: f32,
) -> Result<()> {
    let dims = check_shape(s, key_valid)?;
    let n = s.batch * s.seq * s.heads * s.head_dim;
    for (what, b) in [
        ("attention dout", dout),
        ("attention q", q),
        ("attention k", k),
        ("attention v", v),
        ("attention out", out),
    ] {
        check::len(what, b, n)?;
    }
    for (what, b) in [
        ("attention dq", &*dq),
        ("attention dk", &*dk),
        ("attention dv", &*dv),
    ] {
        check::len(what, b, n)?;
    }
    let rows = s.batch * s.heads * s.seq;
    check::len("attention lse", lse, rows)?;
    check::len("attention delta", delta, rows)?;
    if is_empty(s) {
        return Ok(());
    }
    let args = KernelArgs::new()
        .buf_mut(delta)
        .buf(dout)
        .buf(out)
        .i32(dims.t)
        .i32(dims.h)
        .i32(dims.d);
    dev.launch(&registry::ATTENTION_BACKWARD_DELTA_F32, config(s), args)?;
    let args = KernelArgs::new()
        .buf_mut(dq)
        .buf(dout)
        .buf(q)
        .buf(k)
        .buf(v)
        .buf(lse)
        .buf(delta)
        .opt_buf(key_valid)
        .i32(dims.t)
        .i32(dims.h)
        .i32(dims.d)
        .f32(scale);
    dev.launch(&registry::ATTENTION_BACKWARD_DQ_F32, config(s), args)?;
    let args = KernelArgs::new()
        .buf_mut(dk)
        .buf_mut(dv)
        .buf(dout)
        .buf(q)
        .buf(k)
        .buf(v)
        .buf(lse)
        .buf(delta)
        .opt_buf(key_valid)
        .i32(dims.t)
        .i32(dims.h)
        .i32(dims.d)
        .f32(scale);
    dev.launch(&registry::ATTENTION_BACKWARD_DKV_F32, config(s), args)
}
