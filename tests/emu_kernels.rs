//! Every CUDA kernel, run on the host emulator, against the CPU oracle ops (`culturemert_raw::ops`) on
//! ragged shapes (sizes that are not multiples of the tile/block sizes), under two or three
//! scheduling orders. Tolerances: GEMM-like results |emu - cpu| <= 4 k eps (1 + |cpu|) (f32 summation
//! in a different order); elementwise ops without reductions must agree bit for bit.
//! Kernels launched here (through src/cuda): gemm_f32_nn/nt/tn/tt, layer_norm_forward_f32,
//! layer_norm_backward_dx_f32, layer_norm_backward_params_f32, gelu_forward_f32, gelu_backward_f32,
//! relu_forward_f32, relu_backward_f32,
//! add_f32, scale_f32, global_norm_partials_f32, global_norm_finish_f32, column_sum_f32.

use culturemert_raw::cuda::{elementwise, gelu, gemm, layer_norm, reduce};
use culturemert_raw::device::{LaunchConfig, Schedule};
use culturemert_raw::ops;

const ORDERS: [Schedule; 3] = [Schedule::Forward, Schedule::Reverse, Schedule::Random(7)];

mod common;
use common::{assert_close, random};

fn gemm_tol(k: usize) -> f32 {
    4.0 * k as f32 * f32::EPSILON
}

#[test]
fn gemm_all_variants_with_bias_and_accumulate() {
    let (m, n, k) = (33, 37, 45);
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        for (a_trans, b_trans) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = random(m * k, 1, -1.0, 1.0);
            let b = random(k * n, 2, -1.0, 1.0);
            let bias = random(n, 3, -1.0, 1.0);
            let c0 = random(m * n, 4, -1.0, 1.0);
            for (accumulate, with_bias) in [(false, false), (true, true), (false, true)] {
                let mut want = c0.clone();
                ops::gemm::sgemm(m, n, k, &a, a_trans, &b, b_trans, &mut want, accumulate);
                if with_bias {
                    for (i, w) in want.iter_mut().enumerate() {
                        *w += bias[i % n];
                    }
                }
                let (da, db, dbias) = (
                    dev.htod(&a).unwrap(),
                    dev.htod(&b).unwrap(),
                    dev.htod(&bias).unwrap(),
                );
                let mut dc = dev.htod(&c0).unwrap();
                let bias_arg = if with_bias { Some(&dbias) } else { None };
                gemm::sgemm(
                    &dev, m, n, k, &da, a_trans, &db, b_trans, bias_arg, &mut dc, accumulate,
                )
                .unwrap();
                let what = format!(
                    "gemm {order:?} ta={a_trans} tb={b_trans} acc={accumulate} bias={with_bias}"
                );
                assert_close(&what, &dev.dtoh(&dc).unwrap(), &want, gemm_tol(k));
            }
        }
    }
}

#[test]
fn gemm_larger_than_one_tile_in_every_dim() {
    let (m, n, k) = (130, 67, 70);
    let dev = common::device(Schedule::Reverse);
    let a = random(m * k, 5, -1.0, 1.0);
    let b = random(n * k, 6, -1.0, 1.0);
    let mut want = vec![0.0; m * n];
    ops::gemm::sgemm(m, n, k, &a, false, &b, true, &mut want, false);
    let (da, db) = (dev.htod(&a).unwrap(), dev.htod(&b).unwrap());
    let mut dc = dev.alloc::<f32>(m * n).unwrap();
    gemm::sgemm(&dev, m, n, k, &da, false, &db, true, None, &mut dc, false).unwrap();
    assert_close(
        "gemm 130x67x70 nt",
        &dev.dtoh(&dc).unwrap(),
        &want,
        gemm_tol(k),
    );
}

#[test]
fn linear_forward_and_backward() {
    let (rows, inf, outf) = (33, 37, 29);
    let x = random(rows * inf, 10, -1.0, 1.0);
    let w = random(outf * inf, 11, -1.0, 1.0);
    let bias = random(outf, 12, -1.0, 1.0);
    let dout = random(rows * outf, 13, -1.0, 1.0);
    // Gradients start non-zero: backward must accumulate.
    let (dx0, dw0, db0) = (
        random(rows * inf, 14, -1.0, 1.0),
        random(outf * inf, 15, -1.0, 1.0),
        random(outf, 16, -1.0, 1.0),
    );
    let mut out = vec![0.0; rows * outf];
    ops::linear::linear_forward(&mut out, &x, &w, Some(&bias), rows, inf, outf);
    let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
    ops::linear::linear_backward(
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
        &dout,
        &x,
        &w,
        rows,
        inf,
        outf,
    );
    for order in common::orders(&[Schedule::Forward, Schedule::Reverse]) {
        let dev = common::device(order);
        let (gx, gw, gb, gdout) = (
            dev.htod(&x).unwrap(),
            dev.htod(&w).unwrap(),
            dev.htod(&bias).unwrap(),
            dev.htod(&dout).unwrap(),
        );
        let mut gout = dev.alloc::<f32>(rows * outf).unwrap();
        gemm::linear_forward(&dev, &mut gout, &gx, &gw, Some(&gb), rows, inf, outf).unwrap();
        assert_close(
            &format!("linear fwd {order:?}"),
            &dev.dtoh(&gout).unwrap(),
            &out,
            gemm_tol(inf),
        );
        let (mut gdx, mut gdw, mut gdb) = (
            dev.htod(&dx0).unwrap(),
            dev.htod(&dw0).unwrap(),
            dev.htod(&db0).unwrap(),
        );
        gemm::linear_backward(
            &dev,
            Some(&mut gdx),
            Some(&mut gdw),
            Some(&mut gdb),
            &gdout,
            &gx,
            &gw,
            rows,
            inf,
            outf,
        )
        .unwrap();
        assert_close(
            &format!("linear dx {order:?}"),
            &dev.dtoh(&gdx).unwrap(),
            &dx,
            gemm_tol(outf),
        );
        assert_close(
            &format!("linear dw {order:?}"),
            &dev.dtoh(&gdw).unwrap(),
            &dw,
            gemm_tol(rows),
        );
        assert_close(
            &format!("linear db {order:?}"),
            &dev.dtoh(&gdb).unwrap(),
            &db,
            gemm_tol(rows),
        );
    }
}

#[test]
fn layer_norm_forward_and_backward() {
    let (rows, cols, eps) = (37, 45, 1e-5);
    let x = random(rows * cols, 20, -2.0, 3.0);
    let w = random(cols, 21, 0.5, 1.5);
    let b = random(cols, 22, -0.5, 0.5);
    let dout = random(rows * cols, 23, -1.0, 1.0);
    let (dx0, dw0, db0) = (
        random(rows * cols, 24, -1.0, 1.0),
        random(cols, 25, -1.0, 1.0),
        random(cols, 26, -1.0, 1.0),
    );
    let (mut out, mut mean, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
    ops::layer_norm::layer_norm_forward(
        &mut out, &mut mean, &mut rstd, &x, &w, &b, rows, cols, eps,
    );
    let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
    ops::layer_norm::layer_norm_backward(
        Some(&mut dx),
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
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gw, gb, gdout) = (
            dev.htod(&x).unwrap(),
            dev.htod(&w).unwrap(),
            dev.htod(&b).unwrap(),
            dev.htod(&dout).unwrap(),
        );
        let mut gout = dev.alloc::<f32>(rows * cols).unwrap();
        let (mut gmean, mut grstd) = (
            dev.alloc::<f32>(rows).unwrap(),
            dev.alloc::<f32>(rows).unwrap(),
        );
        layer_norm::layer_norm_forward(
            &dev, &mut gout, &mut gmean, &mut grstd, &gx, &gw, &gb, rows, cols, eps,
        )
        .unwrap();
        let tol = gemm_tol(cols);
        assert_close(
            &format!("layer_norm out {order:?}"),
            &dev.dtoh(&gout).unwrap(),
            &out,
            tol,
        );
        assert_close(
            &format!("layer_norm mean {order:?}"),
            &dev.dtoh(&gmean).unwrap(),
            &mean,
            tol,
        );
        assert_close(
            &format!("layer_norm rstd {order:?}"),
            &dev.dtoh(&grstd).unwrap(),
            &rstd,
            tol,
        );
        let (mut gdx, mut gdw, mut gdb) = (
            dev.htod(&dx0).unwrap(),
            dev.htod(&dw0).unwrap(),
            dev.htod(&db0).unwrap(),
        );
        layer_norm::layer_norm_backward(
            &dev,
            Some(&mut gdx),
            Some(&mut gdw),
            Some(&mut gdb),
            &gdout,
            &gx,
            &gw,
            &gmean,
            &grstd,
            rows,
            cols,
        )
        .unwrap();
        assert_close(
            &format!("layer_norm dx {order:?}"),
            &dev.dtoh(&gdx).unwrap(),
            &dx,
            tol,
        );
        assert_close(
            &format!("layer_norm dw {order:?}"),
            &dev.dtoh(&gdw).unwrap(),
            &dw,
            gemm_tol(rows),
        );
        assert_close(
            &format!("layer_norm db {order:?}"),
            &dev.dtoh(&gdb).unwrap(),
            &db,
            gemm_tol(rows),
        );
        // Only dbias wanted: dx and dweight untouched.
        let mut gdb2 = dev.htod(&db0).unwrap();
        layer_norm::layer_norm_backward(
            &dev,
            None,
            None,
            Some(&mut gdb2),
            &gdout,
            &gx,
            &gw,
            &gmean,
            &grstd,
            rows,
            cols,
        )
        .unwrap();
        assert_close(
            &format!("layer_norm db only {order:?}"),
            &dev.dtoh(&gdb2).unwrap(),
            &db,
            gemm_tol(rows),
        );
    }
}

#[test]
fn gelu_forward_and_backward() {
    let n = 1037;
    let x = random(n, 30, -6.0, 6.0);
    let dout = random(n, 31, -1.0, 1.0);
    let dx0 = random(n, 32, -1.0, 1.0);
    let mut out = vec![0.0; n];
    ops::gelu::gelu_forward(&mut out, &x);
    let mut dx = dx0.clone();
    ops::gelu::gelu_backward(&mut dx, &dout, &x);
    for order in common::orders(&[Schedule::Forward, Schedule::Reverse]) {
        let dev = common::device(order);
        let (gx, gdout) = (dev.htod(&x).unwrap(), dev.htod(&dout).unwrap());
        let mut gout = dev.alloc::<f32>(n).unwrap();
        gelu::gelu_forward(&dev, &mut gout, &gx).unwrap();
        // erff (glibc) vs the oracle's erf: both within ~1 ulp, a few ulps after the products.
        assert_close(
            &format!("gelu fwd {order:?}"),
            &dev.dtoh(&gout).unwrap(),
            &out,
            8.0 * f32::EPSILON,
        );
        let mut gdx = dev.htod(&dx0).unwrap();
        gelu::gelu_backward(&dev, &mut gdx, &gdout, &gx).unwrap();
        assert_close(
            &format!("gelu bwd {order:?}"),
            &dev.dtoh(&gdx).unwrap(),
            &dx,
            8.0 * f32::EPSILON,
        );
    }
}

#[test]
fn relu_forward_and_backward_are_exact() {
    use culturemert_raw::cuda::activation::{activation_backward, activation_forward};
    use culturemert_raw::ops::activation::Activation;
    let n = 1031;
    let mut x = random(n, 33, -2.0, 2.0);
    x[0] = 0.0; // torch: relu'(0) = 0
    x[1] = -0.0;
    let dout = random(n, 34, -1.0, 1.0);
    let dx0 = random(n, 35, -1.0, 1.0);
    // Closed form, and the CPU oracle against it.
    let want: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
    let want_dx: Vec<f32> = (0..n)
        .map(|i| dx0[i] + if x[i] > 0.0 { dout[i] } else { 0.0 })
        .collect();
    let mut out = vec![f32::NAN; n];
    Activation::Relu.forward(&mut out, &x);
    assert_eq!(out, want);
    let mut dx = dx0.clone();
    Activation::Relu.backward(&mut dx, &dout, &x);
    assert_eq!(dx, want_dx);
    for order in common::orders(&[Schedule::Forward, Schedule::Reverse]) {
        let dev = common::device(order);
        let (gx, gdout) = (dev.htod(&x).unwrap(), dev.htod(&dout).unwrap());
        let mut gout = dev.alloc::<f32>(n).unwrap();
        activation_forward(&dev, Activation::Relu, &mut gout, &gx).unwrap();
        assert_eq!(dev.dtoh(&gout).unwrap(), want, "relu fwd {order:?}");
        let mut gdx = dev.htod(&dx0).unwrap();
        activation_backward(&dev, Activation::Relu, &mut gdx, &gdout, &gx).unwrap();
        assert_eq!(dev.dtoh(&gdx).unwrap(), want_dx, "relu bwd {order:?}");
    }
}

#[test]
fn add_and_scale_are_exact() {
    let n = 4099;
    let (a, b) = (random(n, 40, -3.0, 3.0), random(n, 41, -3.0, 3.0));
    let (mut sum, mut scaled) = (vec![0.0; n], vec![0.0; n]);
    ops::elementwise::add_forward(&mut sum, &a, &b);
    ops::elementwise::scale_forward(&mut scaled, &a, -0.37);
    for order in common::orders(&[Schedule::Forward, Schedule::Reverse]) {
        let dev = common::device(order);
        let (ga, gb) = (dev.htod(&a).unwrap(), dev.htod(&b).unwrap());
        let mut out = dev.alloc::<f32>(n).unwrap();
        elementwise::add(&dev, &mut out, &ga, &gb).unwrap();
        assert_eq!(dev.dtoh(&out).unwrap(), sum, "add {order:?}");
        elementwise::scale(&dev, &mut out, &ga, -0.37).unwrap();
        assert_eq!(dev.dtoh(&out).unwrap(), scaled, "scale {order:?}");
    }
}

#[test]
fn global_norm_is_exact_enough_and_deterministic() {
    let lens = [1usize, 33, 1037, 70_001];
    let tensors: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| random(l, 50 + i as u64, -1.0, 1.0))
        .collect();
    let want = tensors
        .iter()
        .flatten()
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>()
        .sqrt();
    let mut results = Vec::new();
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let bufs: Vec<_> = tensors.iter().map(|t| dev.htod(t).unwrap()).collect();
        let refs: Vec<_> = bufs.iter().collect();
        let got = reduce::global_norm(&dev, &refs).unwrap();
        let rel = ((got as f64 - want) / want).abs();
        println!("global_norm {order:?}: {got} vs f64 {want}, rel err {rel:.2e}");
        assert!(rel < 1e-5, "global norm {got} vs {want}");
        results.push(got.to_bits());
        assert_eq!(
            reduce::global_norm(&dev, &refs).unwrap().to_bits(),
            got.to_bits(),
            "run to run"
        );
    }
    assert!(
        results.iter().all(|&r| r == results[0]),
        "scheduling order changed the norm: {results:?}"
    );
}

#[test]
fn column_sum_matches_rows_in_order() {
    let (rows, cols) = (37, 133);
    let x = random(rows * cols, 60, -1.0, 1.0);
    let out0 = random(cols, 61, -1.0, 1.0);
    let mut want = out0.clone();
    for r in 0..rows {
        for c in 0..cols {
            want[c] += x[r * cols + c];
        }
    }
    let dev = common::device(Schedule::Reverse);
    let gx = dev.htod(&x).unwrap();
    let mut out = dev.htod(&out0).unwrap();
    reduce::column_sum(&dev, &mut out, &gx, rows, cols, true).unwrap();
    assert_close(
        "column_sum",
        &dev.dtoh(&out).unwrap(),
        &want,
        gemm_tol(rows),
    );
}

#[test]
fn launches_are_validated_like_the_driver() {
    let dev = common::device(Schedule::Forward);
    let mut out = dev.alloc::<f32>(8).unwrap();
    let x = dev.htod(&[1.0f32; 8]).unwrap();
    let k = &culturemert_raw::device::registry::SCALE_F32;
    let args = || culturemert_raw::device::KernelArgs::new();
    let too_big = LaunchConfig::new((1, 1, 1), (1025, 1, 1));
    let e = dev
        .launch(k, too_big, args().buf_mut(&mut out).buf(&x).f32(1.0).i64(8))
        .unwrap_err();
    assert!(e.to_string().contains("1024"), "{e}");
    let mut smem = LaunchConfig::new((1, 1, 1), (32, 1, 1));
    smem.shared_bytes = 64 * 1024;
    let e = dev
        .launch(k, smem, args().buf_mut(&mut out).buf(&x).f32(1.0).i64(8))
        .unwrap_err();
    assert!(e.to_string().contains("opt in"), "{e}");
    let grid = LaunchConfig::new((1, 70_000, 1), (32, 1, 1));
    assert!(dev
        .launch(k, grid, args().buf_mut(&mut out).buf(&x).f32(1.0).i64(8))
        .is_err());
    // A size mismatch is an error from the launcher, not a wild kernel.
    let short = dev.alloc::<f32>(7).unwrap();
    assert!(elementwise::add(&dev, &mut out, &x, &short).is_err());
}

#[test]
fn emulated_buffers_are_256_byte_aligned() {
    let dev = common::device(Schedule::Forward);
    for len in [1usize, 3, 1000] {
        let b = dev.alloc::<f32>(len).unwrap();
        assert_eq!(b.device_ptr() % 256, 0, "{b:?}");
    }
}
