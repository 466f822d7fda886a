//! The layout, masking, pooling, gather, loss and weight-norm kernels (src/cuda/layout.rs,
//! src/cuda/weight_norm.rs) run on the host emulator against their CPU ops on ragged shapes, under two
//! scheduling orders. Pure copies and masks (and sums whose order matches the CPU op) must agree bit
//! for bit; a single multiply-add is allowed 2 eps relative (FMA contraction); reductions are allowed
//! |emu - cpu| / (1 + |cpu|) <= 4 n eps with n the longest f32 reduction feeding the value (the CPU ops
//! sum in f64 or in another order).
//! Kernels launched here: transpose_last2_f32, narrow_last_f32, narrow_last_backward_f32, mask_rows_f32,
//! replace_masked_rows_forward_f32, replace_masked_rows_backward_dx_f32,
//! replace_masked_rows_backward_demb_f32, mean_pool_time_forward_f32, mean_pool_time_backward_f32,
//! fill_f32, copy_f32, add_scaled_f32, gather_rows_f32, gather_rows_backward_f32,
//! squared_error_partials_f32, squared_error_backward_f32, weight_norm_forward_rows_f32,
//! weight_norm_forward_cols_f32, weight_norm_backward_rows_f32, weight_norm_backward_cols_f32.

use culturemert_raw::autograd::{loss, nn, ParamStore, Tape};
use culturemert_raw::cuda::{layout, weight_norm};
use culturemert_raw::device::Schedule;
use culturemert_raw::ops;
use culturemert_raw::tensor::Tensor;

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];

mod common;
use common::random;

/// Largest |got - want| / (1 + |want|); any non-finite result panics.
fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
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

fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{what}[{i}]: {g} != {w}");
    }
}

/// 4 n eps: the bound for an f32 reduction of n terms summed in another order.
fn sum_tol(n: usize) -> f32 {
    4.0 * n as f32 * f32::EPSILON
}

/// One multiply-add, rounded once or twice.
const FMA_TOL: f32 = 2.0 * f32::EPSILON;

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Runs the tape op `f` on a leaf x (and an optional second leaf), backward from `dout`; returns the
/// output and the gradients of the leaves (zeros when none reached them).
fn tape_op(
    x: (&[usize], &[f32]),
    y: Option<(&[usize], &[f32])>,
    dout: &[f32],
    f: impl FnOnce(
        &mut Tape,
        &culturemert_raw::autograd::Var,
        Option<&culturemert_raw::autograd::Var>,
    ) -> culturemert_raw::autograd::Var,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut tape = Tape::new();
    let xv = tape.leaf(Tensor::from_f32(x.0, x.1.to_vec()));
    let yv = y.map(|(s, d)| tape.leaf(Tensor::from_f32(s, d.to_vec())));
    let out = f(&mut tape, &xv, yv.as_ref());
    let value = out.data().to_vec();
    let grads = tape
        .backward(vec![(&out, dout.to_vec())], &mut ParamStore::new())
        .unwrap();
    let dx = grads
        .grad_of(&xv)
        .map_or(vec![0.0; x.1.len()], |g| g.to_vec());
    let dy = match (&yv, y) {
        (Some(v), Some((_, d))) => grads.grad_of(v).map_or(vec![0.0; d.len()], |g| g.to_vec()),
        _ => Vec::new(),
    };
    (value, dx, dy)
}

#[test]
fn transpose_last2_matches_cpu() {
    for (b, r, c) in [(3, 37, 45), (2, 1, 70), (1, 65, 33), (4, 5, 3)] {
        let n = b * r * c;
        let x = random(n, 1, -1.0, 1.0);
        let init = random(n, 2, -1.0, 1.0);
        let mut want = vec![0.0; n];
        ops::elementwise::transpose_last2(&mut want, &x, b, r, c);
        let want_acc = add(&init, &want);
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let gx = dev.htod(&x).unwrap();
            let mut out = dev.alloc::<f32>(n).unwrap();
            layout::transpose_last2(&dev, &mut out, &gx, b, r, c, false).unwrap();
            assert_exact("transpose", &dev.dtoh(&out).unwrap(), &want);
            let mut acc = dev.htod(&init).unwrap();
            layout::transpose_last2(&dev, &mut acc, &gx, b, r, c, true).unwrap();
            assert_exact("transpose +=", &dev.dtoh(&acc).unwrap(), &want_acc);
        }
    }
}

#[test]
fn narrow_last_matches_cpu() {
    let (b, ch, l, keep) = (3, 5, 41, 29);
    let x = random(b * ch * l, 3, -1.0, 1.0);
    let dout = random(b * ch * keep, 4, -1.0, 1.0);
    let (want, dx, _) = tape_op((&[b, ch, l], &x), None, &dout, |t, x, _| {
        nn::narrow_last(t, x, keep).unwrap()
    });
    let init = random(x.len(), 5, -1.0, 1.0);
    let want_dx = add(&init, &dx);
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let gx = dev.htod(&x).unwrap();
        let mut out = dev.alloc::<f32>(want.len()).unwrap();
        layout::narrow_last(&dev, &mut out, &gx, b * ch, l, keep).unwrap();
        assert_exact("narrow_last", &dev.dtoh(&out).unwrap(), &want);
        let mut gdx = dev.htod(&init).unwrap();
        let gdout = dev.htod(&dout).unwrap();
        layout::narrow_last_backward(&dev, &mut gdx, &gdout, b * ch, l, keep).unwrap();
        assert_exact("narrow_last dx", &dev.dtoh(&gdx).unwrap(), &want_dx);
    }
}

#[test]
fn mask_rows_matches_zero_invalid_frames() {
    let (b, t, h) = (3, 13, 37);
    let rows = b * t;
    let x = random(rows * h, 6, -1.0, 1.0);
    let dout = random(rows * h, 7, -1.0, 1.0);
    let keep: Vec<u8> = (0..rows).map(|r| u8::from(r % 3 != 1)).collect();
    let (want, dx, _) = tape_op((&[b, t, h], &x), None, &dout, |tp, x, _| {
        nn::zero_invalid_frames(tp, x, &keep).unwrap()
    });
    let init = random(rows * h, 8, -1.0, 1.0);
    let want_dx = add(&init, &dx);
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gdout, gkeep) = (
            dev.htod(&x).unwrap(),
            dev.htod(&dout).unwrap(),
            dev.htod(&keep).unwrap(),
        );
        let mut out = dev.alloc::<f32>(rows * h).unwrap();
        layout::mask_rows(&dev, &mut out, &gx, &gkeep, rows, h, false).unwrap();
        assert_exact("mask_rows", &dev.dtoh(&out).unwrap(), &want);
        let mut gdx = dev.htod(&init).unwrap();
        layout::mask_rows(&dev, &mut gdx, &gdout, &gkeep, rows, h, true).unwrap();
        assert_exact("mask_rows +=", &dev.dtoh(&gdx).unwrap(), &want_dx);
    }
}

#[test]
fn replace_masked_rows_matches_cpu() {
    let (b, t, h) = (2, 19, 45);
    let rows = b * t;
    let x = random(rows * h, 9, -1.0, 1.0);
    let emb = random(h, 10, -1.0, 1.0);
    let dout = random(rows * h, 11, -1.0, 1.0);
    let masked: Vec<u8> = (0..rows).map(|r| u8::from((r * 7) % 5 < 2)).collect();
    let (want, dx, demb) = tape_op((&[b, t, h], &x), Some((&[h], &emb)), &dout, |tp, x, e| {
        nn::replace_masked_frames(tp, x, e.unwrap(), &masked).unwrap()
    });
    let init = random(rows * h, 12, -1.0, 1.0);
    let want_dx = add(&init, &dx);
    let emb_init = random(h, 13, -1.0, 1.0);
    let want_demb_acc = add(&emb_init, &demb);
    let masked_rows = masked.iter().filter(|&&m| m != 0).count();
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gemb, gdout, gmask) = (
            dev.htod(&x).unwrap(),
            dev.htod(&emb).unwrap(),
            dev.htod(&dout).unwrap(),
            dev.htod(&masked).unwrap(),
        );
        let mut out = dev.alloc::<f32>(rows * h).unwrap();
        layout::replace_masked_rows_forward(&dev, &mut out, &gx, &gemb, &gmask, rows, h).unwrap();
        assert_exact("replace_masked_rows", &dev.dtoh(&out).unwrap(), &want);
        // From zero, demb adds the masked rows in the CPU op's order: bit-identical.
        let mut gdx = dev.htod(&init).unwrap();
        let mut gdemb = dev.alloc_zeros::<f32>(h).unwrap();
        layout::replace_masked_rows_backward(
            &dev,
            Some(&mut gdx),
            Some(&mut gdemb),
            &gdout,
            &gmask,
            rows,
            h,
        )
        .unwrap();
        assert_exact("replace_masked_rows dx", &dev.dtoh(&gdx).unwrap(), &want_dx);
        assert_exact(
            "replace_masked_rows demb",
            &dev.dtoh(&gdemb).unwrap(),
            &demb,
        );
        // Onto a non-zero demb (and without dx): the initial value joins the sum first.
        let mut gdemb = dev.htod(&emb_init).unwrap();
        layout::replace_masked_rows_backward(&dev, None, Some(&mut gdemb), &gdout, &gmask, rows, h)
            .unwrap();
        assert_close(
            "replace_masked_rows demb +=",
            &dev.dtoh(&gdemb).unwrap(),
            &want_demb_acc,
            sum_tol(masked_rows + 1),
        );
    }
}

#[test]
fn mean_pool_time_matches_cpu() {
    let (b, t, h) = (4, 23, 37);
    let lengths = [23usize, 0, 9, 1];
    let x = random(b * t * h, 14, -1.0, 1.0);
    let dout = random(b * h, 15, -1.0, 1.0);
    let mut want = vec![0.0; b * h];
    ops::pooling::mean_pool_time_forward(&mut want, &x, &lengths, b, t, h);
    let init = random(b * t * h, 16, -1.0, 1.0);
    let mut want_dx = init.clone();
    ops::pooling::mean_pool_time_backward(&mut want_dx, &dout, &lengths, b, t, h);
    let lens: Vec<i32> = lengths.iter().map(|&l| l as i32).collect();
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let (gx, gdout, glen) = (
            dev.htod(&x).unwrap(),
            dev.htod(&dout).unwrap(),
            dev.htod(&lens).unwrap(),
        );
        let mut out = dev.alloc::<f32>(b * h).unwrap();
        layout::mean_pool_time_forward(&dev, &mut out, &gx, &glen, b, t, h).unwrap();
        assert_close(
            "mean_pool_time",
            &dev.dtoh(&out).unwrap(),
            &want,
            sum_tol(t + 1),
        );
        let mut gdx = dev.htod(&init).unwrap();
        layout::mean_pool_time_backward(&dev, &mut gdx, &gdout, &glen, b, t, h).unwrap();
        assert_close(
            "mean_pool_time dx",
            &dev.dtoh(&gdx).unwrap(),
            &want_dx,
            FMA_TOL,
        );
    }
}

/// Device lengths outside [0, frames] are clamped: negative pools nothing, too long pools every frame.
#[test]
fn mean_pool_time_clamps_device_lengths() {
    let (b, t, h) = (2, 7, 5);
    let x = random(b * t * h, 17, -1.0, 1.0);
    let mut want = vec![0.0; b * h];
    ops::pooling::mean_pool_time_forward(&mut want, &x, &[0, t], b, t, h);
    let dev = common::device(Schedule::Forward);
    let (gx, glen) = (dev.htod(&x).unwrap(), dev.htod(&[-3i32, 99]).unwrap());
    let mut out = dev.alloc::<f32>(b * h).unwrap();
    layout::mean_pool_time_forward(&dev, &mut out, &gx, &glen, b, t, h).unwrap();
    assert_close(
        "mean_pool clamp",
        &dev.dtoh(&out).unwrap(),
        &want,
        sum_tol(t + 1),
    );
    let mut gdx = dev.alloc_zeros::<f32>(b * t * h).unwrap();
    let gdout = dev.htod(&vec![1.0f32; b * h]).unwrap();
    layout::mean_pool_time_backward(&dev, &mut gdx, &gdout, &glen, b, t, h).unwrap();
    let dx = dev.dtoh(&gdx).unwrap();
    assert!(dx[..t * h].iter().all(|&v| v == 0.0));
    assert!(dx[t * h..].iter().all(|&v| v == 1.0 / t as f32));
}

#[test]
fn fill_copy_add_scaled() {
    let n = 1003;
    let (a, b) = (random(n, 18, -1.0, 1.0), random(n, 19, -1.0, 1.0));
    let alpha = -0.37f32;
    let mut want = a.clone();
    ops::elementwise::accumulate_scaled(&mut want, &b, alpha);
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        let mut buf = dev.alloc::<f32>(n).unwrap();
        layout::fill(&dev, &mut buf, 2.5).unwrap();
        assert_exact("fill", &dev.dtoh(&buf).unwrap(), &vec![2.5; n]);
        let ga = dev.htod(&a).unwrap();
        layout::copy(&dev, &mut buf, &ga).unwrap();
        assert_exact("copy", &dev.dtoh(&buf).unwrap(), &a);
        let gb = dev.htod(&b).unwrap();
        layout::add_scaled(&dev, &mut buf, &gb, alpha).unwrap();
        assert_close("add_scaled", &dev.dtoh(&buf).unwrap(), &want, FMA_TOL);
    }
}

#[test]
fn gather_rows_matches_cpu() {
    let (rows, h) = (29, 37);
    let x = random(rows * h, 20, -1.0, 1.0);
    // Unique sorted indices (accumulate onto a non-zero dx), then adjacent duplicates (onto zero).
    let unique = [0usize, 3, 4, 11, 17, 28];
    let repeated = [1usize, 2, 2, 2, 9, 20, 20, 28];
    for (idx, from_zero) in [(&unique[..], false), (&repeated[..], true)] {
        let n = idx.len();
        let dout = random(n * h, 21 + n as u64, -1.0, 1.0);
        let (want, dx, _) = tape_op((&[rows, h], &x), None, &dout, |tp, x, _| {
            loss::gather_rows(tp, x, idx).unwrap()
        });
        let init = if from_zero {
            vec![0.0; rows * h]
        } else {
            random(rows * h, 22, -1.0, 1.0)
        };
        let want_dx = add(&init, &dx);
        let index: Vec<i32> = idx.iter().map(|&i| i as i32).collect();
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let (gx, gdout, gidx) = (
                dev.htod(&x).unwrap(),
                dev.htod(&dout).unwrap(),
                dev.htod(&index).unwrap(),
            );
            let mut out = dev.alloc::<f32>(n * h).unwrap();
            layout::gather_rows(&dev, &mut out, &gx, &gidx, rows, h).unwrap();
            assert_exact("gather_rows", &dev.dtoh(&out).unwrap(), &want);
            let mut gdx = dev.htod(&init).unwrap();
            layout::gather_rows_backward(&dev, &mut gdx, &gdout, &gidx, rows, h).unwrap();
            assert_exact("gather_rows dx", &dev.dtoh(&gdx).unwrap(), &want_dx);
        }
    }
}

/// Out-of-range device indices give zero rows and no gradient.
#[test]
fn gather_rows_skips_out_of_range_indices() {
    let (rows, h) = (4, 3);
    let dev = common::device(Schedule::Reverse);
    let x = random(rows * h, 23, 1.0, 2.0);
    let gx = dev.htod(&x).unwrap();
    let gidx = dev.htod(&[-1i32, 2, 4]).unwrap();
    let mut out = dev.alloc::<f32>(3 * h).unwrap();
    layout::gather_rows(&dev, &mut out, &gx, &gidx, rows, h).unwrap();
    let mut want = vec![0.0; 3 * h];
    want[h..2 * h].copy_from_slice(&x[2 * h..3 * h]);
    assert_exact("gather_rows out of range", &dev.dtoh(&out).unwrap(), &want);
    let mut gdx = dev.alloc_zeros::<f32>(rows * h).unwrap();
    let gdout = dev.htod(&vec![1.0f32; 3 * h]).unwrap();
    layout::gather_rows_backward(&dev, &mut gdx, &gdout, &gidx, rows, h).unwrap();
    let dx = dev.dtoh(&gdx).unwrap();
    for (e, &v) in dx.iter().enumerate() {
        assert_eq!(v, if e / h == 2 { 1.0 } else { 0.0 }, "dx[{e}]");
    }
}

/// squared_error_sum / n against loss::mse and loss::mean_square (f64 sums on the CPU); the backward
/// with scale = 2 / n against their gradients.
#[test]
fn squared_error_matches_mse_and_mean_square() {
    for n in [1usize, 257, 70_001] {
        let a = random(n, 24, -1.0, 1.0);
        let b = random(n, 25, -1.0, 1.0);
        let seed = vec![1.0f32];
        let (mse, dmse, _) = tape_op((&[n], &a), None, &seed, |tp, x, _| {
            loss::mse(tp, x, &b).unwrap()
        });
        let (msq, dmsq, _) = tape_op((&[n], &a), None, &seed, |tp, x, _| loss::mean_square(tp, x));
        let init = random(n, 26, -1.0, 1.0);
        let (want_dmse, want_dmsq) = (add(&init, &dmse), add(&init, &dmsq));
        // Longest f32 chain: a thread's grid-stride share, the block tree, the in-order partial sum.
        let blocks = n.div_ceil(256).clamp(1, 256);
        let tol = sum_tol(n.div_ceil(blocks * 256) + 8 + blocks);
        let scale = 2.0 / n as f32;
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let (ga, gb) = (dev.htod(&a).unwrap(), dev.htod(&b).unwrap());
            let got = layout::squared_error_sum(&dev, &ga, Some(&gb)).unwrap() / n as f64;
            let err = (got - mse[0] as f64).abs() / mse[0] as f64;
            println!("mse n={n}: rel err {err:.3e} (tol {tol:.1e})");
            assert!(err <= tol as f64, "mse n={n}: {got} vs {}", mse[0]);
            let got = layout::squared_error_sum(&dev, &ga, None).unwrap() / n as f64;
            let err = (got - msq[0] as f64).abs() / msq[0] as f64;
            println!("mean_square n={n}: rel err {err:.3e} (tol {tol:.1e})");
            assert!(err <= tol as f64, "mean_square n={n}: {got} vs {}", msq[0]);
            let mut da = dev.htod(&init).unwrap();
            layout::squared_error_backward(&dev, &mut da, &ga, Some(&gb), scale).unwrap();
            assert_close("mse grad", &dev.dtoh(&da).unwrap(), &want_dmse, FMA_TOL);
            let mut da = dev.htod(&init).unwrap();
            layout::squared_error_backward(&dev, &mut da, &ga, None, scale).unwrap();
            assert_close(
                "mean_square grad",
                &dev.dtoh(&da).unwrap(),
                &want_dmsq,
                FMA_TOL,
            );
        }
    }
}

/// Weight norm along dim 0 (rows layout), 1 (rows, outer > 1), 2 (column layout, more rows than
/// COL_ROWS and a partial block of slots) and dim 0 of [3, 1, 1] (column layout with one row).
/// Against ops::weight_norm.
#[test]
fn weight_norm_matches_cpu() {
    for (dims, dim) in [
        ([5, 7, 9], 0),
        ([3, 4, 5], 1),
        ([6, 11, 13], 2),
        ([3, 1, 1], 0),
    ] {
        let total: usize = dims.iter().product();
        let n = dims[dim];
        let per_slot = total / n;
        let v = random(total, 27, -1.0, 1.0);
        let g = random(n, 28, 0.5, 1.5);
        let dw = random(total, 29, -1.0, 1.0);
        let mut w = vec![0.0; total];
        let mut norms = vec![0.0; n];
        ops::weight_norm::weight_norm_forward(&mut w, &mut norms, &g, &v, dims, dim);
        let (dg0, dv0) = (random(n, 30, -1.0, 1.0), random(total, 31, -1.0, 1.0));
        let (mut dg, mut dv) = (dg0.clone(), dv0.clone());
        ops::weight_norm::weight_norm_backward(
            Some(&mut dg),
            Some(&mut dv),
            &dw,
            &g,
            &v,
            &norms,
            dims,
            dim,
        );
        let tol = sum_tol(per_slot + 2);
        for order in common::orders(&ORDERS) {
            let dev = common::device(order);
            let (gv, gg, gdw) = (
                dev.htod(&v).unwrap(),
                dev.htod(&g).unwrap(),
                dev.htod(&dw).unwrap(),
            );
            let mut gw = dev.alloc::<f32>(total).unwrap();
            let mut gnorms = dev.alloc::<f32>(n).unwrap();
            weight_norm::weight_norm_forward(&dev, &mut gw, &mut gnorms, &gg, &gv, dims, dim)
                .unwrap();
            let what = format!("weight_norm {dims:?} dim {dim}");
            assert_close(&format!("{what} w"), &dev.dtoh(&gw).unwrap(), &w, tol);
            let got_norms = dev.dtoh(&gnorms).unwrap();
            assert_close(&format!("{what} norms"), &got_norms, &norms, tol);
            // Backward from the CPU norms, so only the backward's own error is measured.
            let cpu_norms = dev.htod(&norms).unwrap();
            let (mut gdg, mut gdv) = (dev.htod(&dg0).unwrap(), dev.htod(&dv0).unwrap());
            weight_norm::weight_norm_backward(
                &dev,
                Some(&mut gdg),
                Some(&mut gdv),
                &gdw,
                &gg,
                &gv,
                &cpu_norms,
                dims,
                dim,
            )
            .unwrap();
            assert_close(&format!("{what} dg"), &dev.dtoh(&gdg).unwrap(), &dg, tol);
            assert_close(&format!("{what} dv"), &dev.dtoh(&gdv).unwrap(), &dv, tol);
            // Each output alone.
            let mut gdg = dev.htod(&dg0).unwrap();
            weight_norm::weight_norm_backward(
                &dev,
                Some(&mut gdg),
                None,
                &gdw,
                &gg,
                &gv,
                &cpu_norms,
                dims,
                dim,
            )
            .unwrap();
            assert_close(
                &format!("{what} dg only"),
                &dev.dtoh(&gdg).unwrap(),
                &dg,
                tol,
            );
            let mut gdv = dev.htod(&dv0).unwrap();
            weight_norm::weight_norm_backward(
                &dev,
                None,
                Some(&mut gdv),
                &gdw,
                &gg,
                &gv,
                &cpu_norms,
                dims,
                dim,
            )
            .unwrap();
            assert_close(
                &format!("{what} dv only"),
                &dev.dtoh(&gdv).unwrap(),
                &dv,
                tol,
            );
        }
    }
}

#[test]
fn bad_sizes_are_errors() {
    let dev = common::device(Schedule::Forward);
    let f = |n: usize| dev.alloc_zeros::<f32>(n).unwrap();
    let (mut a10, b10, a9, a12) = (f(10), f(10), f(9), f(12));
    let mask4 = dev.alloc_zeros::<u8>(4).unwrap();
    let lens2 = dev.alloc_zeros::<i32>(2).unwrap();
    let idx3 = dev.alloc_zeros::<i32>(3).unwrap();
    let err = |r: anyhow::Result<()>, what: &str| {
        let e = r.expect_err(what);
        println!("{what}: {e:#}");
    };
    err(
        layout::transpose_last2(&dev, &mut a10, &a9, 1, 2, 5, false),
        "transpose short x",
    );
    err(
        layout::narrow_last(&dev, &mut a10, &a12, 2, 5, 6),
        "narrow out_len > in_len",
    );
    err(
        layout::narrow_last_backward(&dev, &mut a10, &a12, 3, 4, 4),
        "narrow_backward short dx",
    );
    err(
        layout::mask_rows(&dev, &mut a10, &b10, &mask4, 5, 2, false),
        "mask_rows short keep",
    );
    err(
        layout::replace_masked_rows_forward(&dev, &mut a10, &a12, &a9, &mask4, 4, 3),
        "replace_masked_rows short out",
    );
    err(
        layout::replace_masked_rows_backward(&dev, None, Some(&mut a10), &a12, &mask4, 4, 11),
        "replace_masked_rows short dout",
    );
    err(
        layout::mean_pool_time_forward(&dev, &mut a10, &a12, &lens2, 3, 2, 2),
        "mean_pool short lengths",
    );
    err(
        layout::mean_pool_time_backward(&dev, &mut a10, &a12, &lens2, 2, 3, 2),
        "mean_pool_backward short dx",
    );
    err(layout::copy(&dev, &mut a10, &a9), "copy length mismatch");
    err(
        layout::add_scaled(&dev, &mut a10, &a12, 1.0),
        "add_scaled length mismatch",
    );
    err(
        layout::gather_rows(&dev, &mut a10, &a12, &idx3, 3, 4),
        "gather_rows short out",
    );
    err(
        layout::gather_rows_backward(&dev, &mut a10, &a12, &idx3, 4, 3),
        "gather_rows_backward short dx",
    );
    let e = layout::squared_error_sum(&dev, &a10, Some(&a9)).expect_err("squared_error mismatch");
    println!("squared_error_sum length mismatch: {e:#}");
    err(
        layout::squared_error_backward(&dev, &mut a10, &a12, None, 1.0),
        "squared_error_backward length mismatch",
    );
    let (mut norms, g2) = (f(2), f(2));
    err(
        weight_norm::weight_norm_forward(&dev, &mut a10, &mut norms, &g2, &a9, [2, 1, 5], 0),
        "weight_norm short v",
    );
    err(
        weight_norm::weight_norm_forward(&dev, &mut a10, &mut norms, &g2, &b10, [2, 1, 5], 3),
        "weight_norm dim 3",
    );
    err(
        weight_norm::weight_norm_forward(&dev, &mut a10, &mut norms, &g2, &b10, [2, 1, 5], 2),
        "weight_norm g of 2 for 5 slots",
    );
    let mut dg1 = f(1);
    err(
        weight_norm::weight_norm_backward(
            &dev,
            Some(&mut dg1),
            None,
            &b10,
            &g2,
            &b10,
            &norms,
            [2, 1, 5],
            0,
        ),
        "weight_norm short dg",
    );
}
