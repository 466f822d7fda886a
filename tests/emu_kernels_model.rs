//! The model kernels (attention, conv1d, group norm, AdamW, dropout) run on the host emulator against
//! the CPU oracle (`culturemert_raw::ops`, `culturemert_raw::train::optim`) on ragged shapes, under two
//! scheduling orders. Tolerances: |emu - cpu| / (1 + |cpu|) <= 4 n eps with n the length of the
//! longest reduction feeding the value (f32 summation in a different order); the dropout mask and
//! purely elementwise results must agree bit for bit.
//! Kernels launched here (through src/cuda): attention_forward_f32, attention_backward_delta_f32,
//! attention_backward_dq_f32, attention_backward_dkv_f32, conv1d_forward_f32, conv1d_backward_dx_f32,
//! conv1d_backward_dx_gemm_f32, conv1d_backward_dweight_f32, conv1d_backward_dweight_small_f32,
//! conv1d_backward_dbias_f32, group_norm_forward_f32, group_norm_backward_dx_f32,
//! group_norm_backward_params_f32, adamw_step_f32, dropout_apply_f32.

use culturemert_raw::autograd::ParamStore;
use culturemert_raw::cuda::adamw::{AdamwScalars, AdamwTensor};
use culturemert_raw::cuda::{adamw, attention, conv1d, dropout, group_norm};
use culturemert_raw::device::Schedule;
use culturemert_raw::ops;
use culturemert_raw::ops::attention::AttentionDropout;
use culturemert_raw::tensor::Tensor;
use culturemert_raw::train::optim::{AdamW, ParamGroup};

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];

mod common;
use common::random;

/// Largest |got - want| / (1 + |want|); equal infinities count as exact, any other non-finite panics.
fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_infinite() && g == w {
                return 0.0;
            }
            assert!(g.is_finite(), "non-finite result {g} (want {w})");
            (g - w).abs() / (1.0 + w.abs())
        })
        .fold(0.0, f32::max)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let err = max_rel_err(got, want);
    println!("{what}: max rel err {err:.3e} (tol {tol:.1e})");
    assert!(err <= tol, "{what}: max rel err {err:.3e} > {tol:.1e}");
}

/// 4 n eps: the bound for an f32 reduction of n terms summed in another order.
fn sum_tol(n: usize) -> f32 {
    4.0 * n as f32 * f32::EPSILON
}

/// One attention case: forward (out, lse) and backward (dq, dk, dv accumulated onto non-zero
/// values) vs `ops::attention`, with the same probability dropout on both sides. Batch item b masks
/// the keys j with (j + 3b) % 5 == 0 and, for b == 2, every key (a row without a valid key: out 0,
/// lse -inf, no gradient).
fn attention_case(
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    dropout: Option<AttentionDropout>,
) {
    let s = ops::attention::AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
    };
    let n = batch * seq * heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let q = random(n, 1, -2.0, 2.0);
    let k = random(n, 2, -2.0, 2.0);
    let v = random(n, 3, -1.0, 1.0);
    let dout = random(n, 4, -1.0, 1.0);
    let valid: Vec<u8> = (0..batch * seq)
        .map(|i| {
            let (b, j) = (i / seq, i % seq);
            u8::from(b != 2 && (j + 3 * b) % 5 != 0)
        })
        .collect();
    let (dq0, dk0, dv0) = (
        random(n, 5, -1.0, 1.0),
        random(n, 6, -1.0, 1.0),
        random(n, 7, -1.0, 1.0),
    );
    let mut out = vec![0.0; n];
    let mut lse = vec![0.0; batch * heads * seq];
    ops::attention::attention_forward(
        &mut out,
        &mut lse,
        &q,
        &k,
        &v,
        Some(&valid),
        &s,
        scale,
        dropout,
    );
    let (mut dq, mut dk, mut dv) = (dq0.clone(), dk0.clone(), dv0.clone());
    ops::attention::attention_backward(
        &mut dq,
        &mut dk,
        &mut dv,
        &dout,
        &q,
        &k,
        &v,
        &out,
        &lse,
        Some(&valid),
        &s,
        scale,
        dropout,
    );
    // out and lse reduce over T keys (and D for the scores); the gradients chain two such sums.
    let (fwd_tol, bwd_tol) = (sum_tol(seq + head_dim), sum_tol(2 * (seq + head_dim)));
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gq, gk, gv, gdo, gvalid) = (
            dev.htod(&q).unwrap(),
            dev.htod(&k).unwrap(),
            dev.htod(&v).unwrap(),
            dev.htod(&dout).unwrap(),
            dev.htod(&valid).unwrap(),
        );
        let mut gout = dev.alloc::<f32>(n).unwrap();
        let mut glse = dev.alloc::<f32>(lse.len()).unwrap();
        attention::attention_forward(
            &dev,
            &mut gout,
            &mut glse,
            &gq,
            &gk,
            &gv,
            Some(&gvalid),
            &s,
            scale,
            dropout,
        )
        .unwrap();
        let p = dropout.map_or(0.0, |d| d.p);
        let tag = format!("attention B{batch} T{seq} H{heads} D{head_dim} p{p} {order:?}");
        assert_close(
            &format!("{tag} out"),
            &dev.dtoh(&gout).unwrap(),
            &out,
            fwd_tol,
        );
        assert_close(
            &format!("{tag} lse"),
            &dev.dtoh(&glse).unwrap(),
            &lse,
            fwd_tol,
        );
        let (mut gdq, mut gdk, mut gdv) = (
            dev.htod(&dq0).unwrap(),
            dev.htod(&dk0).unwrap(),
            dev.htod(&dv0).unwrap(),
        );
        let mut delta = dev.alloc::<f32>(lse.len()).unwrap();
        // Backward from the CPU's out/lse, so only the backward kernels are under test here.
        let (cpu_out, cpu_lse) = (dev.htod(&out).unwrap(), dev.htod(&lse).unwrap());
        attention::attention_backward(
            &dev,
            &mut gdq,
            &mut gdk,
            &mut gdv,
            &mut delta,
            &gdo,
            &gq,
            &gk,
            &gv,
            &cpu_out,
            &cpu_lse,
            Some(&gvalid),
            &s,
            scale,
            dropout,
        )
        .unwrap();
        assert_close(&format!("{tag} dq"), &dev.dtoh(&gdq).unwrap(), &dq, bwd_tol);
        assert_close(&format!("{tag} dk"), &dev.dtoh(&gdk).unwrap(), &dk, bwd_tol);
        assert_close(&format!("{tag} dv"), &dev.dtoh(&gdv).unwrap(), &dv, bwd_tol);
    }
}

#[test]
fn attention_head_dim_64_masked_keys() {
    attention_case(2, 37, 2, 64, None);
}

#[test]
fn attention_head_dim_8_with_fully_masked_item() {
    attention_case(3, 61, 3, 8, None);
}

/// Probability dropout: the kernels regenerate the CPU op's mask (a wrong mask bit moves a value by
/// a whole probability, far beyond the tolerance).
#[test]
fn attention_probability_dropout_matches_cpu() {
    let d = AttentionDropout {
        p: 0.3,
        seed: 0x5EED_A77E,
    };
    attention_case(3, 45, 2, 40, Some(d));
}

#[test]
fn attention_rejects_head_dim_above_64() {
    let dev = common::device(Schedule::Forward);
    let s = ops::attention::AttentionShape {
        batch: 1,
        seq: 3,
        heads: 1,
        head_dim: 65,
    };
    let x = dev.alloc_zeros::<f32>(3 * 65).unwrap();
    let mut out = dev.alloc_zeros::<f32>(3 * 65).unwrap();
    let mut lse = dev.alloc_zeros::<f32>(3).unwrap();
    let err =
        attention::attention_forward(&dev, &mut out, &mut lse, &x, &x, &x, None, &s, 1.0, None);
    assert!(err.is_err());
}

/// conv1d forward and backward (dx, dweight, dbias accumulated onto non-zero values) vs `ops::conv1d`.
fn conv1d_case(s: ops::conv1d::Conv1dShape) {
    let lout = s.out_len();
    let cin_g = s.in_channels / s.groups;
    let (nx, nw, ny) = (
        s.batch * s.in_channels * s.in_len,
        s.out_channels * cin_g * s.kernel,
        s.batch * s.out_channels * lout,
    );
    let x = random(nx, 30, -1.0, 1.0);
    let w = random(nw, 31, -1.0, 1.0);
    let bias = random(s.out_channels, 32, -1.0, 1.0);
    let dout = random(ny, 33, -1.0, 1.0);
    let (dx0, dw0, db0) = (
        random(nx, 34, -1.0, 1.0),
        random(nw, 35, -1.0, 1.0),
        random(s.out_channels, 36, -1.0, 1.0),
    );
    let mut out = vec![0.0; ny];
    ops::conv1d::conv1d_forward(&mut out, &x, &w, Some(&bias), &s);
    let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
    ops::conv1d::conv1d_backward(
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
        &dout,
        &x,
        &w,
        &s,
    );
    let cout_g = s.out_channels / s.groups;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gw, gb, gdo) = (
            dev.htod(&x).unwrap(),
            dev.htod(&w).unwrap(),
            dev.htod(&bias).unwrap(),
            dev.htod(&dout).unwrap(),
        );
        let mut gout = dev.alloc::<f32>(ny).unwrap();
        conv1d::conv1d_forward(&dev, &mut gout, &gx, &gw, Some(&gb), &s).unwrap();
        let tag = format!(
            "conv1d Cin{} Cout{} L{} K{} s{} p{} G{} {order:?}",
            s.in_channels, s.out_channels, s.in_len, s.kernel, s.stride, s.padding, s.groups
        );
        let red = cin_g * s.kernel + 1;
        assert_close(
            &format!("{tag} out"),
            &dev.dtoh(&gout).unwrap(),
            &out,
            sum_tol(red),
        );
        let (mut gdx, mut gdw, mut gdb) = (
            dev.htod(&dx0).unwrap(),
            dev.htod(&dw0).unwrap(),
            dev.htod(&db0).unwrap(),
        );
        conv1d::conv1d_backward(
            &dev,
            Some(&mut gdx),
            Some(&mut gdw),
            Some(&mut gdb),
            &gdo,
            &gx,
            &gw,
            &s,
        )
        .unwrap();
        let red_dx = cout_g * s.kernel + 1;
        let red_w = s.batch * lout + 1;
        assert_close(
            &format!("{tag} dx"),
            &dev.dtoh(&gdx).unwrap(),
            &dx,
            sum_tol(red_dx),
        );
        assert_close(
            &format!("{tag} dw"),
            &dev.dtoh(&gdw).unwrap(),
            &dw,
            sum_tol(red_w),
        );
        assert_close(
            &format!("{tag} db"),
            &dev.dtoh(&gdb).unwrap(),
            &db,
            sum_tol(red_w),
        );
    }
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
) -> ops::conv1d::Conv1dShape {
    ops::conv1d::Conv1dShape {
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

#[test]
fn conv1d_grouped_strided_padded() {
    conv1d_case(conv_shape(2, 6, 4, 37, 5, 2, 2, 2));
}

#[test]
fn conv1d_waveform_layer_k10_s5() {
    conv1d_case(conv_shape(2, 1, 5, 61, 10, 5, 0, 1));
}

#[test]
fn conv1d_many_channels_k3_s2_and_positional_like_groups() {
    // cin_g >= 32 with a short kernel: the CPU takes its tap-wise GEMM path.
    conv1d_case(conv_shape(2, 33, 6, 23, 3, 2, 0, 1));
    // Same-length grouped conv (even kernel, padding K/2), like the positional conv.
    conv1d_case(conv_shape(1, 8, 8, 29, 8, 1, 4, 4));
}

#[test]
fn conv1d_gemm_tiles_ragged_in_every_dimension() {
    // cout_g 70 and cin_g*K 111 span two ragged 64-wide tiles each; B*Lout = 84 spans two column
    // tiles of the forward and six ragged 16-deep reduction steps of dweight; two groups (grid z).
    conv1d_case(conv_shape(4, 74, 140, 41, 3, 2, 1, 2));
    // A kernel longer than the 16-deep step (taps of one channel split across steps), padding K/2.
    conv1d_case(conv_shape(2, 15, 21, 45, 20, 1, 10, 3));
    // Same with 17 channels per group (dx as a GEMM: cout_g*K = 180 over ragged steps) and stride 3.
    conv1d_case(conv_shape(2, 34, 18, 47, 20, 3, 10, 2));
    // Stride above the kernel: dx positions of phase 2 get no tap at all (stay as they were).
    conv1d_case(conv_shape(2, 16, 5, 23, 2, 3, 1, 1));
}

#[test]
fn conv1d_rejects_bad_groups() {
    let dev = common::device(Schedule::Forward);
    let s = conv_shape(1, 6, 4, 10, 3, 1, 0, 4);
    let buf = dev.alloc_zeros::<f32>(64).unwrap();
    let mut out = dev.alloc_zeros::<f32>(64).unwrap();
    assert!(conv1d::conv1d_forward(&dev, &mut out, &buf, &buf, None, &s).is_err());
}

/// group norm forward (out, mean, rstd) and backward (accumulated onto non-zero values) vs
/// `ops::group_norm`.
fn group_norm_case(batch: usize, channels: usize, len: usize, groups: usize) {
    let (n, ng, eps) = (batch * channels * len, batch * groups, 1e-5);
    let x = random(n, 40, -2.0, 3.0);
    let w = random(channels, 41, 0.5, 1.5);
    let b = random(channels, 42, -0.5, 0.5);
    let dout = random(n, 43, -1.0, 1.0);
    let (dx0, dw0, db0) = (
        random(n, 44, -1.0, 1.0),
        random(channels, 45, -1.0, 1.0),
        random(channels, 46, -1.0, 1.0),
    );
    let (mut out, mut mean, mut rstd) = (vec![0.0; n], vec![0.0; ng], vec![0.0; ng]);
    ops::group_norm::group_norm_forward(
        &mut out, &mut mean, &mut rstd, &x, &w, &b, batch, channels, len, groups, eps,
    );
    let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
    ops::group_norm::group_norm_backward(
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
        &dout,
        &x,
        &w,
        &mean,
        &rstd,
        batch,
        channels,
        len,
        groups,
    );
    let group_size = channels / groups * len;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gw, gb, gdo) = (
            dev.htod(&x).unwrap(),
            dev.htod(&w).unwrap(),
            dev.htod(&b).unwrap(),
            dev.htod(&dout).unwrap(),
        );
        let mut gout = dev.alloc::<f32>(n).unwrap();
        let mut gmean = dev.alloc::<f32>(ng).unwrap();
        let mut grstd = dev.alloc::<f32>(ng).unwrap();
        group_norm::group_norm_forward(
            &dev, &mut gout, &mut gmean, &mut grstd, &gx, &gw, &gb, batch, channels, len, groups,
            eps,
        )
        .unwrap();
        let tag = format!("group_norm B{batch} C{channels} L{len} G{groups} {order:?}");
        let tol = sum_tol(group_size);
        assert_close(&format!("{tag} out"), &dev.dtoh(&gout).unwrap(), &out, tol);
        assert_close(
            &format!("{tag} mean"),
            &dev.dtoh(&gmean).unwrap(),
            &mean,
            tol,
        );
        assert_close(
            &format!("{tag} rstd"),
            &dev.dtoh(&grstd).unwrap(),
            &rstd,
            tol,
        );
        let (mut gdx, mut gdw, mut gdb) = (
            dev.htod(&dx0).unwrap(),
            dev.htod(&dw0).unwrap(),
            dev.htod(&db0).unwrap(),
        );
        // Backward from the CPU's statistics: only the backward kernels are under test.
        let (cm, cr) = (dev.htod(&mean).unwrap(), dev.htod(&rstd).unwrap());
        group_norm::group_norm_backward(
            &dev,
            Some(&mut gdx),
            Some(&mut gdw),
            Some(&mut gdb),
            &gdo,
            &gx,
            &gw,
            &cm,
            &cr,
            batch,
            channels,
            len,
            groups,
        )
        .unwrap();
        assert_close(&format!("{tag} dx"), &dev.dtoh(&gdx).unwrap(), &dx, tol);
        let tol_p = sum_tol(batch * len);
        assert_close(&format!("{tag} dw"), &dev.dtoh(&gdw).unwrap(), &dw, tol_p);
        assert_close(&format!("{tag} db"), &dev.dtoh(&gdb).unwrap(), &db, tol_p);
    }
}

#[test]
fn group_norm_grouped_and_per_channel() {
    group_norm_case(2, 6, 37, 3);
    // MERT's first conv layer: GroupNorm(C, C), one channel per group.
    group_norm_case(3, 5, 301, 5);
}

#[test]
fn group_norm_rejects_bad_groups() {
    let dev = common::device(Schedule::Forward);
    let x = dev.alloc_zeros::<f32>(60).unwrap();
    let (mut o, mut m, mut r) = (
        dev.alloc_zeros::<f32>(60).unwrap(),
        dev.alloc_zeros::<f32>(4).unwrap(),
        dev.alloc_zeros::<f32>(4).unwrap(),
    );
    let res =
        group_norm::group_norm_forward(&dev, &mut o, &mut m, &mut r, &x, &x, &x, 1, 6, 10, 4, 1e-5);
    assert!(res.is_err());
}

/// Three AdamW steps over ragged tensors in two groups (one with weight decay, one without and with
/// beta1 = 0.3, torch lerp's other branch) vs `train::optim::AdamW`: parameters and both moments must
/// agree bit for bit.
#[test]
fn adamw_multi_tensor_matches_optim_bit_for_bit() {
    let names = ["enc.weight", "enc.bias", "proj.weight", "scale.bias"];
    let sizes = [37usize, 5, 301, 1];
    let groups = vec![
        ParamGroup {
            name: "bias".into(),
            patterns: vec!["*.bias".into()],
            betas: (0.3, 0.99),
            eps: 1e-6,
            weight_decay: 0.0,
            lr_scale: 0.5,
        },
        ParamGroup::all((0.9, 0.98), 1e-8, 0.1),
    ];
    let mut store = ParamStore::new();
    for (i, (name, &n)) in names.iter().zip(&sizes).enumerate() {
        let init = random(n, 50 + i as u64, -1.0, 1.0);
        store.insert(name, Tensor::from_f32(&[n], init)).unwrap();
    }
    let mut opt = AdamW::new(groups.clone()).unwrap();
    let lrs = [1e-2, 3e-2, 5e-3];
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let mut cpu = store.clone();
        opt.reset_state();
        let mut params: Vec<_> = names
            .iter()
            .map(|n| dev.htod(cpu.by_name(n).unwrap().value.data()).unwrap())
            .collect();
        let mut ms: Vec<_> = sizes.iter().map(|&n| dev.alloc_zeros(n).unwrap()).collect();
        let mut vs: Vec<_> = sizes.iter().map(|&n| dev.alloc_zeros(n).unwrap()).collect();
        for (step, &lr) in lrs.iter().enumerate() {
            let mut grads = Vec::new();
            for (i, (name, &n)) in names.iter().zip(&sizes).enumerate() {
                let g = random(n, 100 * step as u64 + i as u64, -2.0, 2.0);
                let id = cpu.id(name).unwrap();
                cpu.get_mut(id).grad = Some(g.clone());
                grads.push(dev.htod(&g).unwrap());
            }
            opt.step(&mut cpu, lr).unwrap();
            let mut tensors: Vec<AdamwTensor<'_>> = Vec::new();
            for (i, ((p, m), v)) in params
                .iter_mut()
                .zip(ms.iter_mut())
                .zip(vs.iter_mut())
                .enumerate()
            {
                let grp = &groups[opt.group_of(names[i]).unwrap()];
                tensors.push(AdamwTensor {
                    param: p,
                    grad: &grads[i],
                    exp_avg: m,
                    exp_avg_sq: v,
                    scalars: AdamwScalars::new(
                        lr * grp.lr_scale,
                        grp.betas,
                        grp.eps,
                        grp.weight_decay,
                        step as u64 + 1,
                    ),
                });
            }
            adamw::adamw_step(&dev, &mut tensors).unwrap();
        }
        for (i, name) in names.iter().enumerate() {
            let st = opt.state(name).unwrap();
            let want = [
                cpu.by_name(name).unwrap().value.data().to_vec(),
                st.exp_avg.clone(),
                st.exp_avg_sq.clone(),
            ];
            let got = [
                dev.dtoh(&params[i]).unwrap(),
                dev.dtoh(&ms[i]).unwrap(),
                dev.dtoh(&vs[i]).unwrap(),
            ];
            for (what, (g, w)) in ["param", "exp_avg", "exp_avg_sq"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "adamw {order:?} {name} {what}: not bit-identical to train::optim"
                );
            }
        }
        println!(
            "adamw {order:?}: 4 tensors x 3 steps bit-identical (params, exp_avg, exp_avg_sq)"
        );
    }
}

/// Dropout forward and backward vs `ops::dropout`, bit for bit, and the mask vs `dropout_keep`.
#[test]
fn dropout_matches_the_cpu_mask_bit_for_bit() {
    let n = 1237;
    let x = random(n, 60, -2.0, 2.0);
    let dout = random(n, 61, -1.0, 1.0);
    let dx0 = random(n, 62, -1.0, 1.0);
    for (p, seed) in [
        (0.1f32, 7u64),
        (0.5, 0xDEAD_BEEF_1234_5678),
        (0.0, 3),
        (1.0, 9),
    ] {
        let mut out = vec![0.0; n];
        ops::dropout::dropout_forward(&mut out, &x, p, seed);
        let mut dx = dx0.clone();
        ops::dropout::dropout_backward(&mut dx, &dout, p, seed);
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let (gx, gdo) = (dev.htod(&x).unwrap(), dev.htod(&dout).unwrap());
            let mut gout = dev.alloc::<f32>(n).unwrap();
            dropout::dropout_forward(&dev, &mut gout, &gx, n, p, seed).unwrap();
            let got = dev.dtoh(&gout).unwrap();
            let mut gdx = dev.htod(&dx0).unwrap();
            dropout::dropout_backward(&dev, &mut gdx, &gdo, n, p, seed).unwrap();
            let got_dx = dev.dtoh(&gdx).unwrap();
            let mut kept = 0;
            for i in 0..n {
                let keep = ops::dropout::dropout_keep(seed, i as u64, p);
                kept += usize::from(keep);
                assert_eq!(keep, got[i] != 0.0, "dropout p={p} {order:?}: mask at {i}");
                assert_eq!(got[i].to_bits(), out[i].to_bits(), "dropout fwd at {i}");
                assert_eq!(got_dx[i].to_bits(), dx[i].to_bits(), "dropout bwd at {i}");
            }
            println!("dropout p={p} seed={seed} {order:?}: {kept}/{n} kept, bit-identical");
        }
    }
    let dev = common::device(Schedule::Forward);
    let buf = dev.alloc_zeros::<f32>(4).unwrap();
    let mut out = dev.alloc_zeros::<f32>(4).unwrap();
    assert!(dropout::dropout_forward(&dev, &mut out, &buf, 4, 1.5, 0).is_err());
}
