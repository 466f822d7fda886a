//! Launchers for `kernels/attention_tc.cu`: fused flash-style attention on tensor cores, q/k/v as
//! bf16/f16 bits [B, T, H*64] (`DeviceBuffer<u16>`, see [`super::tensor_core::cast_to_half`]), f32
//! accumulation and softmax, out f32 [B, T, H*64] and lse f32 [B, H, T] (the contract of
//! `crate::ops::attention` on the half-rounded inputs). Head dim 64 only (MERT's); other head dims go
//! through the f32 kernels in [`super::attention`].

use anyhow::{ensure, Result};

use super::attention::dropout_args;
use super::check;
use super::tensor_core::HalfKind;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, Kernel, KernelArgs, LaunchConfig};
use crate::ops::attention::{AttentionDropout, AttentionShape};

/// The only head dim of the tensor-core kernels, queries per block and threads per block.
pub const HEAD_DIM: usize = 64;
const BLOCK_Q: usize = 64;
const THREADS: u32 = 128;

/// (forward, backward dq, backward dkv) kernels of one half format.
fn kernels(kind: HalfKind) -> [&'static Kernel; 3] {
    match kind {
        HalfKind::Bf16 => [
            &registry::ATTENTION_TC_FORWARD_BF16,
            &registry::ATTENTION_TC_BACKWARD_DQ_BF16,
            &registry::ATTENTION_TC_BACKWARD_DKV_BF16,
        ],
        HalfKind::F16 => [
            &registry::ATTENTION_TC_FORWARD_F16,
            &registry::ATTENTION_TC_BACKWARD_DQ_F16,
            &registry::ATTENTION_TC_BACKWARD_DKV_F16,
        ],
    }
}

struct Dims {
    t: i32,
    h: i32,
}

/// Checks the head dim, the grid limits and the buffer lengths shared by forward and backward.
fn check_shape(s: &AttentionShape, key_valid: Option<&DeviceBuffer<u8>>) -> Result<Dims> {
    ensure!(
        s.head_dim == HEAD_DIM,
        "attention_tc: head_dim {} unsupported (the tensor-core kernels need {HEAD_DIM}; use \
         cuda::attention for others)",
        s.head_dim
    );
    if let Some(kv) = key_valid {
        check::len("attention_tc key_valid", kv, s.batch * s.seq)?;
    }
    check::int(
        "attention_tc B*T*H*D",
        s.batch * s.seq * s.heads * s.head_dim,
    )?;
    let bh = s.batch * s.heads;
    ensure!(
        bh <= 65535,
        "attention_tc: batch*heads = {bh} exceeds the grid.y limit 65535"
    );
    Ok(Dims {
        t: check::int("attention_tc seq", s.seq)?,
        h: check::int("attention_tc heads", s.heads)?,
    })
}

fn config(s: &AttentionShape) -> LaunchConfig {
    LaunchConfig::new(
        (
            s.seq.div_ceil(BLOCK_Q) as u32,
            (s.batch * s.heads) as u32,
            1,
        ),
        (THREADS, 1, 1),
    )
}

/// out = softmax(scale Q Kᵀ, masked keys excluded) V per head on tensor cores (P rounded to `kind`
/// before P·V; probabilities dropped and rescaled under `dropout`); lse [B, H, T] of the undropped
/// f32 softmax. `q`, `k`, `v` hold `kind` bits. Overwrites out and lse.
#[allow(clippy::too_many_arguments)]
pub fn attention_tc_forward(
    dev: &CudaDevice,
    kind: HalfKind,
    out: &mut DeviceBuffer<f32>,
    lse: &mut DeviceBuffer<f32>,
    q: &DeviceBuffer<u16>,
    k: &DeviceBuffer<u16>,
    v: &DeviceBuffer<u16>,
    key_valid: Option<&DeviceBuffer<u8>>,
    s: &AttentionShape,
    scale: f32,
    dropout: Option<AttentionDropout>,
) -> Result<()> {
    let dims = check_shape(s, key_valid)?;
    let (drop_p, drop_scale, seed) = dropout_args(dropout)?;
    let n = s.batch * s.seq * s.heads * s.head_dim;
    check::len("attention_tc q", q, n)?;
    check::len("attention_tc k", k, n)?;
    check::len("attention_tc v", v, n)?;
    check::len("attention_tc out", out, n)?;
    check::len("attention_tc lse", lse, s.batch * s.heads * s.seq)?;
    if n == 0 {
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
        .f32(scale)
        .f32(drop_p)
        .f32(drop_scale)
        .u64(seed);
    dev.launch(kernels(kind)[0], config(s), args)
}

/// Accumulates dq, dk, dv (f32) from dout (f32) and the forward's `kind` inputs, out and lse: P is
/// recomputed per tile; dO, P and dS are rounded to `kind` as mma operands, f32 accumulation.
/// `delta` [B, H, T] is scratch (rowsum(dO ∘ O), computed in f32 by `attention_backward_delta_f32`).
/// `out` and `dropout` must be the forward's.
#[allow(clippy::too_many_arguments)]
pub fn attention_tc_backward(
    dev: &CudaDevice,
    kind: HalfKind,
    dq: &mut DeviceBuffer<f32>,
    dk: &mut DeviceBuffer<f32>,
    dv: &mut DeviceBuffer<f32>,
    delta: &mut DeviceBuffer<f32>,
    dout: &DeviceBuffer<f32>,
    q: &DeviceBuffer<u16>,
    k: &DeviceBuffer<u16>,
    v: &DeviceBuffer<u16>,
    out: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
    key_valid: Option<&DeviceBuffer<u8>>,
    s: &AttentionShape,
    scale: f32,
    dropout: Option<AttentionDropout>,
) -> Result<()> {
    let dims = check_shape(s, key_valid)?;
    let (drop_p, drop_scale, seed) = dropout_args(dropout)?;
    let n = s.batch * s.seq * s.heads * s.head_dim;
    for (what, b) in [
        ("attention_tc q", q),
        ("attention_tc k", k),
        ("attention_tc v", v),
    ] {
        check::len(what, b, n)?;
    }
    for (what, b) in [
        ("attention_tc dout", dout),
        ("attention_tc out", out),
        ("attention_tc dq", &*dq),
        ("attention_tc dk", &*dk),
        ("attention_tc dv", &*dv),
    ] {
        check::len(what, b, n)?;
    }
    let rows = s.batch * s.heads * s.seq;
    check::len("attention_tc lse", lse, rows)?;
    check::len("attention_tc delta", delta, rows)?;
    if n == 0 {
        return Ok(());
    }
    // delta: the f32 kernel of kernels/attention.cu, one warp per row, 8 rows per block.
    let delta_cfg = LaunchConfig::new(
        (s.seq.div_ceil(8) as u32, (s.batch * s.heads) as u32, 1),
        (32, 8, 1),
    );
    let args = KernelArgs::new()
        .buf_mut(delta)
        .buf(dout)
        .buf(out)
        .i32(dims.t)
        .i32(dims.h)
        .i32(HEAD_DIM as i32);
    dev.launch(&registry::ATTENTION_BACKWARD_DELTA_F32, delta_cfg, args)?;
    let [_, dq_kernel, dkv_kernel] = kernels(kind);
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
        .f32(scale)
        .f32(drop_p)
        .f32(drop_scale)
        .u64(seed);
    dev.launch(dq_kernel, config(s), args)?;
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
        .f32(scale)
        .f32(drop_p)
        .f32(drop_scale)
        .u64(seed);
    dev.launch(dkv_kernel, config(s), args)
}
