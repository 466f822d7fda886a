//! The split (two-pass) reductions on the host emulator against the CPU oracle ops: conv1d dweight
//! (tiled and small-im2col kernels) and dbias, column sums, layer norm dweight/dbias. Test split
//! policies with small minimum chunks force S > 1 on small shapes, with chunk lengths that do not
//! divide the reduction (a ragged last chunk; chunks crossing batch items). Each case runs under two
//! scheduling orders and twice per order, accumulates onto non-zero gradients, and must be bit for bit
//! the same every time (fixed-order partial sums, no atomics). Tolerance against the CPU:
//! |emu - cpu| / (1 + |cpu|) <= 4 n eps, n the reduction length (f32 sums in another order).
//! Kernels launched here (through src/cuda): conv1d_backward_dweight_f32,
//! conv1d_backward_dweight_small_f32, conv1d_backward_dbias_f32, column_sum_f32,
//! layer_norm_backward_params_f32, sum_partials_f32.

use culturemert_raw::cuda::reduce::{SplitPolicy, COLUMN_SPLIT};
use culturemert_raw::cuda::{conv1d, layer_norm, reduce};
use culturemert_raw::device::{CudaDevice, Schedule};
use culturemert_raw::ops;
use culturemert_raw::ops::conv1d::Conv1dShape;

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];

mod common;
use common::{assert_close, random};

/// 4 n eps: the bound for an f32 reduction of n terms summed in another order.
fn sum_tol(n: usize) -> f32 {
    4.0 * n as f32 * f32::EPSILON
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every result of `run` (one per scheduling order, each run twice on its device) is bit-identical.
fn assert_deterministic(what: &str, mut run: impl FnMut(&CudaDevice) -> Vec<Vec<f32>>) {
    let mut first: Option<Vec<Vec<u32>>> = None;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        for _ in 0..2 {
            let got: Vec<Vec<u32>> = run(&dev).iter().map(|v| bits(v)).collect();
            match &first {
                None => first = Some(got),
                Some(f) => assert!(*f == got, "{what}: {order:?} changed the bits"),
            }
        }
    }
}

/// The policy really splits `len` into S > 1 chunks with a ragged last one.
fn assert_ragged_split(what: &str, policy: SplitPolicy, blocks: usize, len: usize) -> usize {
    let (s, chunk) = policy.split(blocks, len);
    println!("{what}: {len} split into {s} chunks of {chunk}");
    assert!(
        s > 1 && !len.is_multiple_of(chunk),
        "{what}: split {s} x {chunk} of {len} is not a ragged split"
    );
    s
}

#[test]
fn split_policy_covers_the_length_and_respects_the_minimum() {
    let p = SplitPolicy {
        target_blocks: 264,
        min_chunk: 64,
    };
    for blocks in [1, 7, 24, 96, 192, 263, 264, 1000] {
        for len in [0, 1, 63, 127, 128, 1000, 11_968, 383_968, 767_968] {
            let (s, chunk) = p.split(blocks, len);
            assert!(s >= 1 && chunk >= 1, "{blocks} {len}: {s} x {chunk}");
            assert!(
                s * chunk >= len && (s - 1) * chunk < len.max(1),
                "{blocks} {len}"
            );
            if s > 1 {
                assert!(chunk >= p.min_chunk, "{blocks} {len}: chunk {chunk}");
                assert!(
                    blocks * s <= p.target_blocks,
                    "{blocks} {len}: {s} past one wave"
                );
            } else if len >= 2 * p.min_chunk {
                assert!(2 * blocks > p.target_blocks, "{blocks} {len}: not split");
            }
        }
    }
    // The MERT-v1-95M shapes at batch 32 x 5 s (kernels/README.md).
    let conv = |blocks, len| conv1d::DWEIGHT_SPLIT.split(blocks, len).0;
    assert_eq!(conv(24 * 8, 32 * 11999), 2, "conv1 k3 s2: 192 tiles");
    assert_eq!(conv(16 * 8, 32 * 749), 4, "conv5 k2 s2: 128 tiles");
    assert_eq!(conv(96 * 16, 32 * 374), 1, "pos_conv: 1536 tiles");
    assert_eq!(
        conv1d::DWEIGHT_SMALL_SPLIT.split(32, 32 * 23999).0,
        8,
        "conv0: 32 channel blocks"
    );
    assert_eq!(COLUMN_SPLIT.split(24, 11968).0, 44, "768 columns");
    assert_eq!(COLUMN_SPLIT.split(96, 11968).0, 11, "3072 columns");
}

/// dweight and dbias (accumulated onto non-zero values) vs `ops::conv1d` with `policy` forcing a
/// ragged split of B*Lout; `blocks` is the dweight grid without chunks (to check the split).
fn conv_split_case(s: Conv1dShape, policy: SplitPolicy, blocks: usize) {
    let lout = s.out_len();
    let nw = s.out_channels * (s.in_channels / s.groups) * s.kernel;
    let x = random(s.batch * s.in_channels * s.in_len, 70, -1.0, 1.0);
    let w = random(nw, 71, -1.0, 1.0);
    let dout = random(s.batch * s.out_channels * lout, 72, -1.0, 1.0);
    let (dw0, db0) = (
        random(nw, 73, -1.0, 1.0),
        random(s.out_channels, 74, -1.0, 1.0),
    );
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    ops::conv1d::conv1d_backward(None, Some(&mut dw), Some(&mut db), &dout, &x, &w, &s);
    let len = s.batch * lout;
    let tag = format!(
        "conv1d B{} Cin{} Cout{} L{} K{} s{} p{} G{}",
        s.batch, s.in_channels, s.out_channels, s.in_len, s.kernel, s.stride, s.padding, s.groups
    );
    assert_ragged_split(&format!("{tag} dweight"), policy, blocks, len);
    assert_ragged_split(&format!("{tag} dbias"), policy, s.out_channels, len);
    assert_deterministic(&tag, |dev| {
        let (gx, gw, gdo) = (
            dev.htod(&x).unwrap(),
            dev.htod(&w).unwrap(),
            dev.htod(&dout).unwrap(),
        );
        let (mut gdw, mut gdb) = (dev.htod(&dw0).unwrap(), dev.htod(&db0).unwrap());
        conv1d::conv1d_backward_with(
            dev,
            None,
            Some(&mut gdw),
            Some(&mut gdb),
            &gdo,
            &gx,
            &gw,
            &s,
            Some(policy),
        )
        .unwrap();
        let (got_w, got_b) = (dev.dtoh(&gdw).unwrap(), dev.dtoh(&gdb).unwrap());
        assert_close(&format!("{tag} dw"), &got_w, &dw, sum_tol(len + 1));
        assert_close(&format!("{tag} db"), &got_b, &db, sum_tol(len + 1));
        vec![got_w, got_b]
    });
}

#[allow(clippy::too_many_arguments)]
fn conv_shape(
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    in_len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Conv1dShape {
    Conv1dShape {
        batch,
        in_channels,
        out_channels,
        in_len,
        kernel,
        stride,
        padding,
        groups,
    }
}

fn policy(min_chunk: usize) -> SplitPolicy {
    SplitPolicy {
        target_blocks: 264,
        min_chunk,
    }
}

#[test]
fn conv0_shape_dweight_small_kernel_split() {
    // Cin 1 -> 40 (three 16-channel blocks, the last ragged), k10 s5: 10 taps. Lout 280, B*Lout 560
    // in 3 chunks of 187: a chunk crosses the batch boundary and ends mid-step (128 positions).
    conv_split_case(conv_shape(2, 1, 40, 1405, 10, 5, 0, 1), policy(150), 3);
    // Short chunks (8 of 82 positions: less than one lane row) over many blocks.
    conv_split_case(conv_shape(2, 1, 40, 213, 10, 5, 0, 1), policy(7), 3);
}

#[test]
fn small_taps_with_groups_and_padding_split() {
    // 3 channels x 5 taps per group (15 <= 16), 2 groups, stride 2, padding 2.
    conv_split_case(conv_shape(3, 6, 4, 37, 5, 2, 2, 2), policy(5), 2);
    // 2 channels x 8 taps = 16 taps exactly, 4 groups, positional-conv-like same-length padding.
    conv_split_case(conv_shape(2, 8, 8, 29, 8, 1, 4, 4), policy(8), 4);
}

#[test]
fn conv1_shape_dweight_tiled_split() {
    // k3 s2, cin_g*K = 60 (one ragged column tile), cout 70 (two row tiles): 2 tiles, B*Lout 106 in
    // 6 chunks of 18 (not a multiple of the 16-deep step).
    conv_split_case(conv_shape(2, 20, 70, 107, 3, 2, 0, 1), policy(16), 2);
}

#[test]
fn pos_conv_shape_dweight_tiled_split_with_groups() {
    // 4 groups x (6 channels x 8 taps), padding K/2 (same length + 1): grid z = chunk * G + group.
    conv_split_case(conv_shape(2, 24, 12, 45, 8, 1, 4, 4), policy(10), 4);
}

#[test]
fn column_sum_split_matches_rows_in_order() {
    let (rows, cols) = (299, 133);
    let x = random(rows * cols, 80, -1.0, 1.0);
    let out0 = random(cols, 81, -1.0, 1.0);
    let mut want = out0.clone();
    for r in 0..rows {
        for c in 0..cols {
            want[c] += x[r * cols + c];
        }
    }
    let plain: Vec<f32> = want.iter().zip(&out0).map(|(w, o)| w - o).collect();
    // min_chunk 16: 18 chunks of 17 rows (2-3 per warp); 40: 7 chunks of 43 (the 4-row loads).
    for min_chunk in [16, 40] {
        let p = policy(min_chunk);
        assert_ragged_split("column_sum", p, cols.div_ceil(32), rows);
        for accumulate in [true, false] {
            let tag = format!("column_sum min_chunk {min_chunk} accumulate {accumulate}");
            assert_deterministic(&tag, |dev| {
                let gx = dev.htod(&x).unwrap();
                let mut out = dev.htod(&out0).unwrap();
                reduce::column_sum_with(dev, &mut out, &gx, rows, cols, accumulate, p).unwrap();
                let got = dev.dtoh(&out).unwrap();
                let want = if accumulate { &want } else { &plain };
                // the accumulated result rounds once more than the plain sum
                assert_close(&tag, &got, want, sum_tol(rows + 1));
                vec![got]
            });
        }
    }
}

#[test]
fn layer_norm_params_split() {
    let (rows, cols, eps) = (299, 45, 1e-5);
    let x = random(rows * cols, 90, -2.0, 3.0);
    let w = random(cols, 91, 0.5, 1.5);
    let b = random(cols, 92, -0.5, 0.5);
    let dout = random(rows * cols, 93, -1.0, 1.0);
    let (dw0, db0) = (random(cols, 94, -1.0, 1.0), random(cols, 95, -1.0, 1.0));
    let (mut out, mut mean, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
    ops::layer_norm::layer_norm_forward(
        &mut out, &mut mean, &mut rstd, &x, &w, &b, rows, cols, eps,
    );
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    ops::layer_norm::layer_norm_backward(
        None,
        Some(&mut dw),
        Some(&mut db),
        &dout,
        &x,
        &w,
        &mean,
        &rstd,
        rows,
        cols,
    );
    let tol = sum_tol(rows + 1);
    for min_chunk in [16, 40] {
        let p = policy(min_chunk);
        assert_ragged_split("layer_norm params", p, cols.div_ceil(32), rows);
        // (dweight, dbias) wanted: both, only dweight, only dbias; the other stays untouched.
        for (want_w, want_b) in [(true, true), (true, false), (false, true)] {
            let tag = format!("layer_norm params min_chunk {min_chunk} dw {want_w} db {want_b}");
            assert_deterministic(&tag, |dev| {
                let (gx, gw, gdo, gm, gr) = (
                    dev.htod(&x).unwrap(),
                    dev.htod(&w).unwrap(),
                    dev.htod(&dout).unwrap(),
                    dev.htod(&mean).unwrap(),
                    dev.htod(&rstd).unwrap(),
                );
                let (mut gdw, mut gdb) = (dev.htod(&dw0).unwrap(), dev.htod(&db0).unwrap());
                layer_norm::layer_norm_backward_with(
                    dev,
                    None,
                    want_w.then_some(&mut gdw),
                    want_b.then_some(&mut gdb),
                    &gdo,
                    &gx,
                    &gw,
                    &gm,
                    &gr,
                    rows,
                    cols,
                    p,
                )
                .unwrap();
                let (got_w, got_b) = (dev.dtoh(&gdw).unwrap(), dev.dtoh(&gdb).unwrap());
                assert_close(&tag, &got_w, if want_w { &dw } else { &dw0 }, tol);
                assert_close(&tag, &got_b, if want_b { &db } else { &db0 }, tol);
                vec![got_w, got_b]
            });
        }
    }
}
