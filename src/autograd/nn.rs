//! Tape-level ops: each computes its forward with the CPU oracle op and records a backward closure that
//! keeps only what the backward needs. Shapes are checked here, once, with errors that name the op.

use super::tape::{GradSlots, Tape, Var};
use crate::ops::activation::Activation;
use crate::ops::{
    attention as attn, conv1d, dropout as drop, elementwise as ew, gelu as gl, group_norm as gn,
    layer_norm as ln, linear as lin, pooling, weight_norm as wn,
};
use crate::tensor::Tensor;
use anyhow::{ensure, Result};

fn slot<'a, 'b>(slots: &'a mut GradSlots<'b>, i: usize) -> Option<&'a mut [f32]> {
    slots[i].as_deref_mut()
}

/// The first three slots (missing ones as None), borrowed at once.
type Slot3<'a> = (
    Option<&'a mut [f32]>,
    Option<&'a mut [f32]>,
    Option<&'a mut [f32]>,
);
fn slots3<'a, 'b>(slots: &'a mut GradSlots<'b>) -> Slot3<'a> {
    let mut it = slots.iter_mut().map(|s| s.as_deref_mut());
    (
        it.next().flatten(),
        it.next().flatten(),
        it.next().flatten(),
    )
}

/// y = x W^T + b over the last dim of x (PyTorch nn.Linear).
pub fn linear(tape: &mut Tape, x: &Var, weight: &Var, bias: Option<&Var>) -> Result<Var> {
    let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
    ensure!(
        weight.shape().len() == 2,
        "linear: weight must be 2-D, got {:?}",
        weight.shape()
    );
    ensure!(
        x.shape().last() == Some(&in_f),
        "linear: input {:?} vs weight {:?}",
        x.shape(),
        weight.shape()
    );
    if let Some(b) = bias {
        ensure!(
            b.shape() == [out_f],
            "linear: bias {:?} vs weight {:?}",
            b.shape(),
            weight.shape()
        );
    }
    let rows = x.value.numel() / in_f;
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap() = out_f;
    let mut out = vec![0.0; rows * out_f];
    lin::linear_forward(
        &mut out,
        x.data(),
        weight.data(),
        bias.map(|b| b.data()),
        rows,
        in_f,
        out_f,
    );
    let (xs, ws) = (x.value.clone(), weight.value.clone());
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    Ok(tape.record(
        Tensor::from_f32(&out_shape, out),
        &inputs,
        move |dout, g| {
            let (dx, dw, db) = slots3(g);
            lin::linear_backward(dx, dw, db, dout, xs.data(), ws.data(), rows, in_f, out_f);
        },
    ))
}

/// 1-D convolution of x [B, Cin, L] with weight [Cout, Cin/groups, K] (PyTorch nn.Conv1d).
pub fn conv1d(
    tape: &mut Tape,
    x: &Var,
    weight: &Var,
    bias: Option<&Var>,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Var> {
    ensure!(
        x.shape().len() == 3 && weight.shape().len() == 3,
        "conv1d: x {:?}, weight {:?}",
        x.shape(),
        weight.shape()
    );
    let s = conv1d::Conv1dShape {
        batch: x.shape()[0],
        in_channels: x.shape()[1],
        out_channels: weight.shape()[0],
        in_len: x.shape()[2],
        kernel: weight.shape()[2],
        stride,
        padding,
        groups,
    };
    ensure!(
        groups > 0 && s.in_channels.is_multiple_of(groups) && s.out_channels.is_multiple_of(groups),
        "conv1d: groups {groups} vs channels"
    );
    ensure!(
        weight.shape()[1] * groups == s.in_channels,
        "conv1d: weight {:?} vs input {:?}",
        weight.shape(),
        x.shape()
    );
    ensure!(
        s.in_len + 2 * padding >= s.kernel,
        "conv1d: input of length {} is shorter than kernel {}",
        s.in_len,
        s.kernel
    );
    let out_len = s.out_len();
    let mut out = vec![0.0; s.batch * s.out_channels * out_len];
    conv1d::conv1d_forward(
        &mut out,
        x.data(),
        weight.data(),
        bias.map(|b| b.data()),
        &s,
    );
    let (xs, ws) = (x.value.clone(), weight.value.clone());
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    Ok(tape.record(
        Tensor::from_f32(&[s.batch, s.out_channels, out_len], out),
        &inputs,
        move |dout, g| {
            let (dx, dw, db) = slots3(g);
            conv1d::conv1d_backward(dx, dw, db, dout, xs.data(), ws.data(), &s);
        },
    ))
}

/// GroupNorm over x [B, C, L] with per-channel affine.
pub fn group_norm(
    tape: &mut Tape,
    x: &Var,
    weight: &Var,
    bias: &Var,
    groups: usize,
    eps: f32,
) -> Result<Var> {
    ensure!(
        x.shape().len() == 3,
        "group_norm: x must be [B, C, L], got {:?}",
        x.shape()
    );
    let (b, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    ensure!(
        c.is_multiple_of(groups) && weight.shape() == [c] && bias.shape() == [c],
        "group_norm: shapes {:?} {:?}",
        x.shape(),
        weight.shape()
    );
    let mut out = vec![0.0; b * c * l];
    let (mut mean, mut rstd) = (vec![0.0; b * groups], vec![0.0; b * groups]);
    gn::group_norm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        x.data(),
        weight.data(),
        bias.data(),
        b,
        c,
        l,
        groups,
        eps,
    );
    let (xs, ws) = (x.value.clone(), weight.value.clone());
    Ok(tape.record(
        Tensor::from_f32(x.shape(), out),
        &[x, weight, bias],
        move |dout, g| {
            let (dx, dw, db) = slots3(g);
            gn::group_norm_backward(
                dx,
                dw,
                db,
                dout,
                xs.data(),
                ws.data(),
                &mean,
                &rstd,
                b,
                c,
                l,
                groups,
            );
        },
    ))
}

/// LayerNorm over the last dim.
pub fn layer_norm(tape: &mut Tape, x: &Var, weight: &Var, bias: &Var, eps: f32) -> Result<Var> {
    let cols = *x.shape().last().unwrap_or(&0);
    ensure!(
        cols > 0 && weight.shape() == [cols] && bias.shape() == [cols],
        "layer_norm: x {:?}, weight {:?}",
        x.shape(),
        weight.shape()
    );
    let rows = x.value.numel() / cols;
    let mut out = vec![0.0; rows * cols];
    let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
    ln::layer_norm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        x.data(),
        weight.data(),
        bias.data(),
        rows,
        cols,
        eps,
    );
    let (xs, ws) = (x.value.clone(), weight.value.clone());
    Ok(tape.record(
        Tensor::from_f32(x.shape(), out),
        &[x, weight, bias],
        move |dout, g| {
            let (dx, dw, db) = slots3(g);
            ln::layer_norm_backward(
                dx,
                dw,
                db,
                dout,
                xs.data(),
                ws.data(),
                &mean,
                &rstd,
                rows,
                cols,
            );
        },
    ))
}

/// The config's activation (GELU or ReLU) of x.
pub fn activation(tape: &mut Tape, x: &Var, act: Activation) -> Var {
    let mut out = vec![0.0; x.value.numel()];
    act.forward(&mut out, x.data());
    let xs = x.value.clone();
    tape.record(Tensor::from_f32(x.shape(), out), &[x], move |dout, g| {
        if let Some(dx) = slot(g, 0) {
            act.backward(dx, dout, xs.data());
        }
    })
}

/// Exact (erf) GELU.
pub fn gelu(tape: &mut Tape, x: &Var) -> Var {
    let mut out = vec![0.0; x.value.numel()];
    gl::gelu_forward(&mut out, x.data());
    let xs = x.value.clone();
    tape.record(Tensor::from_f32(x.shape(), out), &[x], move |dout, g| {
        if let Some(dx) = slot(g, 0) {
            gl::gelu_backward(dx, dout, xs.data());
        }
    })
}

pub fn add(tape: &mut Tape, a: &Var, b: &Var) -> Result<Var> {
    ensure!(
        a.shape() == b.shape(),
        "add: shapes {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let mut out = vec![0.0; a.value.numel()];
    ew::add_forward(&mut out, a.data(), b.data());
    Ok(
        tape.record(Tensor::from_f32(a.shape(), out), &[a, b], move |dout, g| {
            for i in 0..2 {
                if let Some(d) = slot(g, i) {
                    ew::accumulate(d, dout);
                }
            }
        }),
    )
}

/// Identity forward, gradient scaled by `alpha` backward (fairseq GradMultiply).
pub fn grad_multiply(tape: &mut Tape, x: &Var, alpha: f32) -> Var {
    tape.record(x.value.clone(), &[x], move |dout, g| {
        if let Some(d) = slot(g, 0) {
            ew::accumulate_scaled(d, dout, alpha);
        }
    })
}

/// [B, R, C] -> [B, C, R].
pub fn transpose_last2(tape: &mut Tape, x: &Var) -> Result<Var> {
    ensure!(
        x.shape().len() == 3,
        "transpose: expected 3-D, got {:?}",
        x.shape()
    );
    let (b, r, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let mut out = vec![0.0; b * r * c];
    ew::transpose_last2(&mut out, x.data(), b, r, c);
    Ok(
        tape.record(Tensor::from_f32(&[b, c, r], out), &[x], move |dout, g| {
            if let Some(d) = slot(g, 0) {
                let mut t = vec![0.0; b * r * c];
                ew::transpose_last2(&mut t, dout, b, c, r);
                ew::accumulate(d, &t);
            }
        }),
    )
}

/// Keep the first `len` steps of the last dim of x [B, C, L].
pub fn narrow_last(tape: &mut Tape, x: &Var, len: usize) -> Result<Var> {
    ensure!(
        x.shape().len() == 3 && len <= x.shape()[2],
        "narrow: {len} of {:?}",
        x.shape()
    );
    let (b, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let out: Vec<f32> = x
        .data()
        .chunks_exact(l)
        .flat_map(|row| row[..len].iter().copied())
        .collect();
    Ok(
        tape.record(Tensor::from_f32(&[b, c, len], out), &[x], move |dout, g| {
            if let Some(d) = slot(g, 0) {
                for (drow, orow) in d.chunks_exact_mut(l).zip(dout.chunks_exact(len)) {
                    ew::accumulate(&mut drow[..len], orow);
                }
            }
        }),
    )
}

/// Zero the rows of x [B, T, H] whose frame is not valid (`valid[b*T + t] == 0`).
pub fn zero_invalid_frames(tape: &mut Tape, x: &Var, valid: &[u8]) -> Result<Var> {
    let h = *x.shape().last().unwrap();
    ensure!(
        valid.len() * h == x.value.numel(),
        "frame mask of {} frames for {:?}",
        valid.len(),
        x.shape()
    );
    let mut out = x.data().to_vec();
    for (row, &ok) in out.chunks_exact_mut(h).zip(valid) {
        if ok == 0 {
            row.fill(0.0);
        }
    }
    let valid = valid.to_vec();
    Ok(
        tape.record(Tensor::from_f32(x.shape(), out), &[x], move |dout, g| {
            if let Some(d) = slot(g, 0) {
                for ((drow, orow), &ok) in
                    d.chunks_exact_mut(h).zip(dout.chunks_exact(h)).zip(&valid)
                {
                    if ok != 0 {
                        ew::accumulate(drow, orow);
                    }
                }
            }
        }),
    )
}

/// Replace the rows of x [B, T, H] where `mask[b*T + t] != 0` by the vector `emb` [H] (masked_spec_embed).
pub fn replace_masked_frames(tape: &mut Tape, x: &Var, emb: &Var, mask: &[u8]) -> Result<Var> {
    let h = *x.shape().last().unwrap();
    ensure!(
        emb.shape() == [h] && mask.len() * h == x.value.numel(),
        "mask embedding {:?} for {:?}",
        emb.shape(),
        x.shape()
    );
    let mut out = x.data().to_vec();
    for (row, &m) in out.chunks_exact_mut(h).zip(mask) {
        if m != 0 {
            row.copy_from_slice(emb.data());
        }
    }
    let mask = mask.to_vec();
    Ok(tape.record(
        Tensor::from_f32(x.shape(), out),
        &[x, emb],
        move |dout, g| {
            let (mut dx, mut demb, _) = slots3(g);
            for (i, (orow, &m)) in dout.chunks_exact(h).zip(&mask).enumerate() {
                if m != 0 {
                    if let Some(de) = demb.as_deref_mut() {
                        ew::accumulate(de, orow);
                    }
                } else if let Some(d) = dx.as_deref_mut() {
                    ew::accumulate(&mut d[i * h..(i + 1) * h], orow);
                }
            }
        },
    ))
}

/// Weight norm: w = g * v / ||v|| with the norm over every dim but `dim` (0 or 2) of v [d0, d1, d2].
pub fn weight_norm(tape: &mut Tape, g: &Var, v: &Var, dim: usize) -> Result<Var> {
    ensure!(
        v.shape().len() == 3 && (dim == 0 || dim == 2),
        "weight_norm: v {:?}, dim {dim}",
        v.shape()
    );
    let dims = [v.shape()[0], v.shape()[1], v.shape()[2]];
    ensure!(
        g.value.numel() == dims[dim],
        "weight_norm: g {:?} for v {:?} along dim {dim}",
        g.shape(),
        v.shape()
    );
    let mut w = vec![0.0; v.value.numel()];
    let mut norms = vec![0.0; dims[dim]];
    wn::weight_norm_forward(&mut w, &mut norms, g.data(), v.data(), dims, dim);
    let (gs, vs) = (g.value.clone(), v.value.clone());
    Ok(
        tape.record(Tensor::from_f32(v.shape(), w), &[g, v], move |dw, s| {
            let (dg, dv, _) = slots3(s);
            wn::weight_norm_backward(dg, dv, dw, gs.data(), vs.data(), &norms, dims, dim);
        }),
    )
}

/// Fused multi-head attention core on q, k, v [B, T, H*D]; `key_valid` [B*T] (1 = attend);
/// `dropout`: probability dropout (training), its mask regenerated from the seed by the backward.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    tape: &mut Tape,
    q: &Var,
    k: &Var,
    v: &Var,
    heads: usize,
    key_valid: Option<&[u8]>,
    scale: f32,
    dropout: Option<attn::AttentionDropout>,
) -> Result<Var> {
    if let Some(d) = &dropout {
        ensure!(
            (0.0..=1.0).contains(&d.p),
            "attention: dropout probability {} outside [0, 1]",
            d.p
        );
    }
    ensure!(
        q.shape().len() == 3 && q.shape() == k.shape() && q.shape() == v.shape(),
        "attention: q {:?} k {:?} v {:?}",
        q.shape(),
        k.shape(),
        v.shape()
    );
    let (b, t, hd) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    ensure!(
        heads > 0 && hd.is_multiple_of(heads),
        "attention: {hd} features in {heads} heads"
    );
    let s = attn::AttentionShape {
        batch: b,
        seq: t,
        heads,
        head_dim: hd / heads,
    };
    if let Some(m) = key_valid {
        ensure!(
            m.len() == b * t,
            "attention: key mask of {} for {b}x{t}",
            m.len()
        );
    }
    let mut out = vec![0.0; b * t * hd];
    let mut lse = vec![0.0; b * heads * t];
    attn::attention_forward(
        &mut out,
        &mut lse,
        q.data(),
        k.data(),
        v.data(),
        key_valid,
        &s,
        scale,
        dropout,
    );
    let out = Tensor::from_f32(q.shape(), out);
    let (qs, ks, vs, os) = (
        q.value.clone(),
        k.value.clone(),
        v.value.clone(),
        out.clone(),
    );
    let mask = key_valid.map(|m| m.to_vec());
    Ok(tape.record(out, &[q, k, v], move |dout, g| {
        // The fused backward writes all three; an input that needs no gradient gets a scratch buffer.
        let n = qs.numel();
        let mut spare: [Vec<f32>; 3] = Default::default();
        let mut bufs = g
            .iter_mut()
            .zip(spare.iter_mut())
            .map(|(s, sp)| match s.as_deref_mut() {
                Some(d) => d,
                None => {
                    *sp = vec![0.0; n];
                    sp.as_mut_slice()
                }
            });
        let (dq, dk, dv) = (
            bufs.next().unwrap(),
            bufs.next().unwrap(),
            bufs.next().unwrap(),
        );
        attn::attention_backward(
            dq,
            dk,
            dv,
            dout,
            qs.data(),
            ks.data(),
            vs.data(),
            os.data(),
            &lse,
            mask.as_deref(),
            &s,
            scale,
            dropout,
        );
    }))
}

/// Inverted dropout with a counter-based mask from `seed` (identity when p == 0).
pub fn dropout(tape: &mut Tape, x: &Var, p: f32, seed: u64) -> Var {
    if p == 0.0 {
        return x.clone();
    }
    let mut out = vec![0.0; x.value.numel()];
    drop::dropout_forward(&mut out, x.data(), p, seed);
    tape.record(Tensor::from_f32(x.shape(), out), &[x], move |dout, g| {
        if let Some(d) = slot(g, 0) {
            drop::dropout_backward(d, dout, p, seed);
        }
    })
}

/// Mean over the first lengths[b] frames of x [B, T, C] -> [B, C].
pub fn mean_pool_time(tape: &mut Tape, x: &Var, lengths: &[usize]) -> Result<Var> {
    ensure!(
        x.shape().len() == 3 && lengths.len() == x.shape()[0],
        "mean_pool: {:?} with {} lengths",
        x.shape(),
        lengths.len()
    );
    let (b, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    ensure!(
        lengths.iter().all(|&l| l > 0 && l <= t),
        "mean_pool: lengths {lengths:?} for {t} frames"
    );
    let mut out = vec![0.0; b * c];
    pooling::mean_pool_time_forward(&mut out, x.data(), lengths, b, t, c);
    let lengths = lengths.to_vec();
    Ok(
        tape.record(Tensor::from_f32(&[b, c], out), &[x], move |dout, g| {
            if let Some(d) = slot(g, 0) {
                pooling::mean_pool_time_backward(d, dout, &lengths, b, t, c);
            }
        }),
    )
}
