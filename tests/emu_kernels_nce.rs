//! The fused NCE codebook-loss kernels on the host emulator against the CPU op
//! (`culturemert_raw::ops::nce_loss`, itself checked against an f64 reference and finite differences in
//! tests/nce_loss.rs), on ragged shapes (rows, codewords, dim not multiples of the 32-wide tiles), under
//! two scheduling orders. Tolerance: max |emu - cpu| <= 1e-5 * max |cpu| per output (loss, dpred,
//! dcodewords; the f32 sums run in another order), arg-max flags equal, and results bit-identical
//! across scheduling orders and across the gradient subsets (no atomics, fixed reduction orders).
//! Kernels launched here (through src/cuda/nce_loss.rs): nce_codeword_inv_norms_f32, nce_loss_forward_f32,
//! nce_loss_backward_rows_f32, nce_loss_backward_codewords_f32.

use culturemert_raw::cuda::nce_loss;
use culturemert_raw::device::Schedule;
use culturemert_raw::ops::nce_loss::{self as cpu, NceShape};

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];
const TEMPERATURE: f32 = 0.1;
const DLOSS: f32 = 0.7;
const REL_TOL: f32 = 1e-5;

mod common;
use common::random;

/// Inputs of one case: every 4th row points (up to noise) at its target codeword, so the arg-max
/// flag is exercised both ways.
struct Case {
    s: NceShape,
    pred: Vec<f32>,
    codewords: Vec<f32>,
    targets: Vec<i32>,
    dpred0: Vec<f32>,
    dcodewords0: Vec<f32>,
}

fn make_case(rows: usize, codebooks: usize, codewords: usize, dim: usize, seed: u64) -> Case {
    let s = NceShape {
        rows,
        codebooks,
        codewords,
        dim,
    };
    let (kd, cw_len) = (codebooks * dim, codebooks * codewords * dim);
    let cw = random(cw_len, seed, 0.0, 1.0); // label_embs_concat init: uniform(0, 1)
    let targets: Vec<i32> = random(rows * codebooks, seed + 1, 0.0, codewords as f32)
        .iter()
        .map(|&v| (v as i32).min(codewords as i32 - 1))
        .collect();
    let mut pred = random(rows * kd, seed + 2, -1.0, 1.0);
    for n in (0..rows).step_by(4) {
        for k in 0..codebooks {
            let y = targets[n * codebooks + k] as usize;
            for t in 0..dim {
                let p = &mut pred[n * kd + k * dim + t];
                *p = 2.5 * cw[(k * codewords + y) * dim + t] + 0.05 * *p;
            }
        }
    }
    Case {
        s,
        pred,
        codewords: cw,
        targets,
        dpred0: random(rows * kd, seed + 3, -0.5, 0.5),
        dcodewords0: random(cw_len, seed + 4, -0.5, 0.5),
    }
}

/// max |got - want| and max |want|.
fn abs_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            assert!(g.is_finite(), "non-finite result {g} (want {w})");
            (g - w).abs()
        })
        .fold(0.0, f32::max);
    (err, want.iter().map(|w| w.abs()).fold(0.0, f32::max))
}

/// `got` and `want` hold `base` plus an accumulated gradient: the tolerance scales with the gradient.
fn assert_close(what: &str, got: &[f32], want: &[f32], base: Option<&[f32]>) {
    let (err, _) = abs_err(got, want);
    let scale = match base {
        Some(b) => want
            .iter()
            .zip(b)
            .map(|(w, b)| (w - b).abs())
            .fold(0.0, f32::max),
        None => want.iter().map(|w| w.abs()).fold(0.0, f32::max),
    };
    println!(
        "{what}: max abs err {err:.3e}, max |ref| {scale:.3e}, rel {:.3e} (tol {REL_TOL:.0e})",
        err / scale
    );
    assert!(scale > 0.0, "{what}: reference is all zero");
    assert!(
        err <= REL_TOL * scale,
        "{what}: max abs err {err:.3e} > {REL_TOL:.0e} * {scale:.3e}"
    );
}

/// Emulator outputs: loss, correct, dpred, dcodewords (both gradients requested), and dpred alone,
/// dcodewords alone.
type Outputs = (Vec<f32>, Vec<i32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn run_emulated(c: &Case, order: Schedule) -> Outputs {
    let dev = common::device(order);
    let s = &c.s;
    let pairs = s.rows * s.codebooks;
    let pred = dev.htod(&c.pred).unwrap();
    let cw = dev.htod(&c.codewords).unwrap();
    let targets = dev.htod(&c.targets).unwrap();
    let mut loss = dev.alloc::<f32>(pairs).unwrap();
    let mut correct = dev.alloc::<i32>(pairs).unwrap();
    let mut lse = dev.alloc::<f32>(pairs).unwrap();
    nce_loss::nce_loss_forward(
        &dev,
        &mut loss,
        &mut correct,
        &mut lse,
        &pred,
        &cw,
        &targets,
        s,
        TEMPERATURE,
    )
    .unwrap();
    let backward = |want_dp: bool, want_dc: bool| {
        let mut dp = dev.htod(&c.dpred0).unwrap();
        let mut dc = dev.htod(&c.dcodewords0).unwrap();
        nce_loss::nce_loss_backward(
            &dev,
            want_dp.then_some(&mut dp),
            want_dc.then_some(&mut dc),
            DLOSS,
            &pred,
            &cw,
            &targets,
            &lse,
            s,
            TEMPERATURE,
        )
        .unwrap();
        (dev.dtoh(&dp).unwrap(), dev.dtoh(&dc).unwrap())
    };
    let (dp, dc) = backward(true, true);
    let (dp_only, dc_untouched) = backward(true, false);
    assert_eq!(
        dc_untouched, c.dcodewords0,
        "dcodewords written when not requested"
    );
    let (dp_untouched, dc_only) = backward(false, true);
    assert_eq!(dp_untouched, c.dpred0, "dpred written when not requested");
    (
        dev.dtoh(&loss).unwrap(),
        dev.dtoh(&correct).unwrap(),
        dp,
        dc,
        dp_only,
        dc_only,
    )
}

fn check_case(c: &Case) {
    let s = &c.s;
    let pairs = s.rows * s.codebooks;
    let mut loss_ref = vec![0.0; pairs];
    let mut correct_ref = vec![false; pairs];
    cpu::nce_loss_forward(
        &mut loss_ref,
        &mut correct_ref,
        &c.pred,
        &c.codewords,
        &c.targets,
        s,
        TEMPERATURE,
    );
    let (mut dp_ref, mut dc_ref) = (c.dpred0.clone(), c.dcodewords0.clone());
    cpu::nce_loss_backward(
        Some(&mut dp_ref),
        Some(&mut dc_ref),
        DLOSS,
        &c.pred,
        &c.codewords,
        &c.targets,
        s,
        TEMPERATURE,
    );
    let hits = correct_ref.iter().filter(|&&b| b).count();
    assert!(
        hits > 0 && hits < pairs,
        "case should have both flag values"
    );

    let mut first: Option<Outputs> = None;
    for order in common::orders(&ORDERS) {
        println!("{s:?} {order:?}");
        let out = run_emulated(c, order);
        let (loss, correct, dp, dc, dp_only, dc_only) = &out;
        assert_close("loss", loss, &loss_ref, None);
        let (sum, sum_ref) = (
            loss.iter().map(|&v| v as f64).sum::<f64>(),
            loss_ref.iter().map(|&v| v as f64).sum::<f64>(),
        );
        println!("loss sum {sum} vs {sum_ref}");
        assert!((sum - sum_ref).abs() <= REL_TOL as f64 * sum_ref.abs());
        let flags: Vec<bool> = correct.iter().map(|&v| v == 1).collect();
        assert!(correct.iter().all(|&v| v == 0 || v == 1));
        assert_eq!(flags, correct_ref, "arg-max flags");
        assert_close("dpred", dp, &dp_ref, Some(&c.dpred0));
        assert_close("dcodewords", dc, &dc_ref, Some(&c.dcodewords0));
        assert_eq!(
            dp_only, dp,
            "dpred alone differs from dpred with dcodewords"
        );
        assert_eq!(
            dc_only, dc,
            "dcodewords alone differs from dcodewords with dpred"
        );
        match &first {
            None => first = Some(out),
            Some(f) => assert!(*f == out, "results differ between scheduling orders"),
        }
    }
}

#[test]
fn nce_kernels_match_cpu_dim64() {
    check_case(&make_case(37, 3, 67, 64, 11));
}

#[test]
fn nce_kernels_match_cpu_dim24() {
    check_case(&make_case(37, 3, 67, 24, 21));
}

#[test]
fn nce_kernels_match_cpu_small() {
    // Fewer rows and codewords than one tile, dim < 32 and odd.
    check_case(&make_case(9, 2, 13, 7, 31));
}

#[test]
fn nce_rejects_bad_labels_and_sizes() {
    let c = make_case(9, 2, 13, 7, 41);
    let s = &c.s;
    let dev = common::device(Schedule::Forward);
    let pairs = s.rows * s.codebooks;
    let pred = dev.htod(&c.pred).unwrap();
    let cw = dev.htod(&c.codewords).unwrap();
    let mut loss = dev.alloc::<f32>(pairs).unwrap();
    let mut correct = dev.alloc::<i32>(pairs).unwrap();
    let mut lse = dev.alloc::<f32>(pairs).unwrap();
    let mut dpred = dev.htod(&c.dpred0).unwrap();
    for bad in [s.codewords as i32, -1] {
        let mut t = c.targets.clone();
        t[5] = bad; // row 2, codebook 1
        let targets = dev.htod(&t).unwrap();
        let err = nce_loss::nce_loss_forward(
            &dev,
            &mut loss,
            &mut correct,
            &mut lse,
            &pred,
            &cw,
            &targets,
            s,
            TEMPERATURE,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("target {bad} at row 2, codebook 1")),
            "{err}"
        );
        let err = nce_loss::nce_loss_backward(
            &dev,
            Some(&mut dpred),
            None,
            DLOSS,
            &pred,
            &cw,
            &targets,
            &lse,
            s,
            TEMPERATURE,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outside 0..13"), "{err}");
    }
    assert_eq!(
        dev.dtoh(&dpred).unwrap(),
        c.dpred0,
        "dpred written on error"
    );

    // A codeword table one row short, and a dim whose shared memory exceeds 48 KiB.
    let targets = dev.htod(&c.targets).unwrap();
    let short = dev.htod(&c.codewords[..c.codewords.len() - s.dim]).unwrap();
    let err = nce_loss::nce_loss_forward(
        &dev,
        &mut loss,
        &mut correct,
        &mut lse,
        &pred,
        &short,
        &targets,
        s,
        TEMPERATURE,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nce_loss codewords"), "{err}");
    let wide = NceShape { dim: 256, ..*s };
    let err = nce_loss::nce_loss_forward(
        &dev,
        &mut loss,
        &mut correct,
        &mut lse,
        &pred,
        &cw,
        &targets,
        &wide,
        TEMPERATURE,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shared memory"), "{err}");
}
