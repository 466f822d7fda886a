//! Tensor-core kernels (kernels/gemm_tc.cu, kernels/mma.cuh) on the host emulator, under two
//! scheduling orders.
//! - gemm_tc_bf16 / gemm_tc_f16 on ragged shapes, all four transpose combinations, with and without
//!   bias and accumulation. Truth: the f64 product of the SAME rounded 16-bit inputs (products of two
//!   halves are exact in f32), so the only error left is the f32 accumulation order. Tolerance:
//!   |got - want| <= 1e-5 * (sum_k |a||b| + |bias| + |c0|) per element (bound k * 2^-24 ~ 4e-6 at k = 70).
//! - mma_layout_probe (kernels/tests/mma_layout.cu): one m16n8k16 on fragments filled straight from
//!   the PTX ISA layout formulas, against the f64 product: a wrong lane/register mapping in the
//!   emulator's mma gives O(1) errors.
//! - The four casts (cast_f32_to_bf16, cast_f32_to_f16, cast_bf16_to_f32, cast_f16_to_f32) bit for bit against the `half` crate's round-to-nearest-even (NaN: only NaN-ness
//!   is compared; the GPU returns a canonical NaN, `half` keeps payload bits).

use culturemert_raw::cuda::tensor_core::{cast_from_half, cast_to_half, gemm_tc, HalfKind};
use culturemert_raw::device::registry;
use culturemert_raw::device::{CudaDevice, KernelArgs, LaunchConfig, Schedule};
use half::{bf16, f16};

mod common;
use common::random;

const ORDERS: [Schedule; 2] = [Schedule::Forward, Schedule::Reverse];
const KINDS: [HalfKind; 2] = [HalfKind::Bf16, HalfKind::F16];
const GEMM_TOL: f64 = 1e-5;

fn to_bits(kind: HalfKind, v: f32) -> u16 {
    match kind {
        HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
        HalfKind::F16 => f16::from_f32(v).to_bits(),
    }
}

fn from_bits(kind: HalfKind, b: u16) -> f32 {
    match kind {
        HalfKind::Bf16 => bf16::from_bits(b).to_f32(),
        HalfKind::F16 => f16::from_bits(b).to_f32(),
    }
}

/// Element (i, j) of a logical [rows, cols] matrix stored row-major, or transposed ([cols, rows]).
fn at(x: &[f64], trans: bool, rows: usize, cols: usize, i: usize, j: usize) -> f64 {
    if trans {
        x[j * rows + i]
    } else {
        x[i * cols + j]
    }
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_trans: bool,
    b_trans: bool,
    with_bias: bool,
    accumulate: bool,
}

/// Runs one GEMM case on `dev` and returns the largest error relative to the per-element scale.
fn gemm_case_error(dev: &CudaDevice, kind: HalfKind, c: &Case, seed: u64) -> f64 {
    let (m, n, k) = (c.m, c.n, c.k);
    // Non-symmetric, sign-mixed inputs with different ranges for A and B.
    let a_bits: Vec<u16> = random(m * k, seed, -1.0, 1.0)
        .iter()
        .map(|&v| to_bits(kind, v))
        .collect();
    let b_bits: Vec<u16> = random(k * n, seed + 1, -2.0, 0.5)
        .iter()
        .map(|&v| to_bits(kind, v))
        .collect();
    let bias = random(n, seed + 2, -1.0, 1.0);
    let c0 = random(m * n, seed + 3, -1.0, 1.0);
    let a: Vec<f64> = a_bits.iter().map(|&b| from_bits(kind, b) as f64).collect();
    let b: Vec<f64> = b_bits.iter().map(|&b| from_bits(kind, b) as f64).collect();

    let da = dev.htod(&a_bits).unwrap();
    let db = dev.htod(&b_bits).unwrap();
    let dbias = dev.htod(&bias).unwrap();
    let mut dc = dev.htod(&c0).unwrap();
    let bias_arg = c.with_bias.then_some(&dbias);
    gemm_tc(
        dev,
        kind,
        m,
        n,
        k,
        &da,
        c.a_trans,
        &db,
        c.b_trans,
        &mut dc,
        bias_arg,
        c.accumulate,
    )
    .unwrap();
    let got = dev.dtoh(&dc).unwrap();

    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut scale) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = at(&a, c.a_trans, m, k, i, p) * at(&b, c.b_trans, k, n, p, j);
                want += x;
                scale += x.abs();
            }
            if c.with_bias {
                want += bias[j] as f64;
                scale += (bias[j] as f64).abs();
            }
            if c.accumulate {
                want += c0[i * n + j] as f64;
                scale += (c0[i * n + j] as f64).abs();
            }
            let g = got[i * n + j] as f64;
            assert!(g.is_finite(), "C[{i},{j}] = {g} (want {want})");
            worst = worst.max((g - want).abs() / scale.max(f64::MIN_POSITIVE));
        }
    }
    worst
}

/// All transpose combinations x {plain, bias + accumulate} on ragged shapes; the third shape has
/// every dimension a multiple of 8 so the 16-byte vector-load paths run too (the others are scalar).
fn gemm_all_layouts(kind: HalfKind) {
    let shapes = [(37, 45, 70), (70, 19, 33), (40, 24, 48)];
    let mut worst = 0.0f64;
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for (a_trans, b_trans) in [(false, false), (false, true), (true, false), (true, true)] {
                for (with_bias, accumulate) in [(false, false), (true, true)] {
                    let case = Case {
                        m,
                        n,
                        k,
                        a_trans,
                        b_trans,
                        with_bias,
                        accumulate,
                    };
                    let err = gemm_case_error(&dev, kind, &case, 10 * s as u64 + 1);
                    assert!(
                        err <= GEMM_TOL,
                        "{kind:?} {order:?} m={m} n={n} k={k} ta={a_trans} tb={b_trans} \
                         bias={with_bias} acc={accumulate}: rel err {err:.3e} > {GEMM_TOL:.0e}"
                    );
                    worst = worst.max(err);
                }
            }
        }
    }
    println!("gemm_tc {kind:?}: max error / sum|a||b| = {worst:.3e} (tol {GEMM_TOL:.0e})");
}

#[test]
fn gemm_tc_bf16_all_layouts_match_f64_product_of_rounded_inputs() {
    gemm_all_layouts(HalfKind::Bf16);
}

#[test]
fn gemm_tc_f16_all_layouts_match_f64_product_of_rounded_inputs() {
    gemm_all_layouts(HalfKind::F16);
}

#[test]
fn gemm_tc_linear_layers_and_degenerate_sizes() {
    let dev = common::device(Schedule::Forward);
    // nn.Linear shapes: forward x[rows,in]·W[out,in]^T, dX = dY·W, dW += dY^T·X (k = rows = 65).
    let (rows, inf, outf) = (65, 24, 40);
    for kind in KINDS {
        for (what, case) in [
            ("forward", (rows, outf, inf, false, true, true, false)),
            ("dX", (rows, inf, outf, false, false, false, true)),
            ("dW", (outf, inf, rows, true, false, false, true)),
        ] {
            let (m, n, k, a_trans, b_trans, with_bias, accumulate) = case;
            let c = Case {
                m,
                n,
                k,
                a_trans,
                b_trans,
                with_bias,
                accumulate,
            };
            let err = gemm_case_error(&dev, kind, &c, 99);
            println!("{kind:?} linear {what}: rel err {err:.3e}");
            assert!(err <= GEMM_TOL, "{kind:?} {what}: {err:.3e}");
        }
        // k = 0: C = bias (or unchanged when accumulating without bias).
        let c = Case {
            m: 5,
            n: 3,
            k: 0,
            a_trans: false,
            b_trans: true,
            with_bias: true,
            accumulate: false,
        };
        assert_eq!(gemm_case_error(&dev, kind, &c, 7), 0.0);
    }
    // Size checks: a buffer one element short is an error, not an out-of-bounds read.
    let a = dev.alloc_zeros::<u16>(6 * 7 - 1).unwrap();
    let b = dev.alloc_zeros::<u16>(7 * 5).unwrap();
    let mut c = dev.alloc_zeros::<f32>(6 * 5).unwrap();
    let e = gemm_tc(
        &dev,
        HalfKind::Bf16,
        6,
        5,
        7,
        &a,
        false,
        &b,
        false,
        &mut c,
        None,
        false,
    )
    .expect_err("short A must be rejected");
    assert!(format!("{e:#}").contains("gemm_tc A"), "{e:#}");
}

#[test]
fn mma_fragment_layout_follows_the_ptx_isa() {
    if common::skip_unless_emulator("probes the emulated mma.sync fragment layout; kernels/tests/*.cu are not compiled for the GPU") {
        return;
    }
    for order in common::orders(&ORDERS) {
        let dev = common::device(order);
        for kind in KINDS {
            let a_bits: Vec<u16> = random(16 * 16, 31, -1.0, 1.0)
                .iter()
                .map(|&v| to_bits(kind, v))
                .collect();
            let b_bits: Vec<u16> = random(16 * 8, 32, -1.0, 3.0)
                .iter()
                .map(|&v| to_bits(kind, v))
                .collect();
            let c = random(16 * 8, 33, -1.0, 1.0);
            let (da, db, dc) = (
                dev.htod(&a_bits).unwrap(),
                dev.htod(&b_bits).unwrap(),
                dev.htod(&c).unwrap(),
            );
            let mut dd = dev.alloc_zeros::<f32>(16 * 8).unwrap();
            dev.launch(
                &registry::MMA_LAYOUT_PROBE,
                LaunchConfig::new((1, 1, 1), (32, 1, 1)),
                KernelArgs::new()
                    .buf_mut(&mut dd)
                    .buf(&da)
                    .buf(&db)
                    .buf(&dc)
                    .i32((kind == HalfKind::Bf16) as i32),
            )
            .unwrap();
            let d = dev.dtoh(&dd).unwrap();
            let mut worst = 0.0f64;
            for i in 0..16 {
                for j in 0..8 {
                    let (mut want, mut scale) = (c[i * 8 + j] as f64, (c[i * 8 + j] as f64).abs());
                    for p in 0..16 {
                        let x = from_bits(kind, a_bits[i * 16 + p]) as f64
                            * from_bits(kind, b_bits[p * 8 + j]) as f64;
                        want += x;
                        scale += x.abs();
                    }
                    worst = worst.max((d[i * 8 + j] as f64 - want).abs() / scale);
                }
            }
            println!("mma m16n8k16 {kind:?} {order:?}: max rel err {worst:.3e}");
            assert!(worst <= GEMM_TOL, "{kind:?} {order:?}: {worst:.3e}");
        }
    }
}

/// f32 inputs: every upper half-word combined with lower half-words that hit the bf16 tie (0x8000)
/// and the f16 tie (low 13 bits 0x1000) and their neighbours, plus named edge values.
fn cast_inputs() -> Vec<f32> {
    let lows: [u32; 9] = [
        0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x3000, 0x7fff, 0x8000, 0x8001,
    ];
    let mut v: Vec<f32> = (0..=0xffffu32)
        .flat_map(|hi| lows.iter().map(move |&lo| f32::from_bits(hi << 16 | lo)))
        .collect();
    v.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,              // f32 subnormal
        5.960_464_5e-8,     // 2^-24: smallest f16 subnormal
        2.980_232_2e-8,     // 2^-25: tie between 0 and 2^-24 -> 0
        8.940_697e-8,       // 3 * 2^-25: tie -> 2^-23 (even)
        65504.0,            // largest f16
        65519.996,          // just below the f16 overflow tie
        65520.0,            // tie -> inf
        1.0 + 1.0 / 2048.0, // f16 tie -> 1
        1.0 + 3.0 / 2048.0, // f16 tie -> 1 + 2^-9
        1.0 + 1.0 / 256.0,  // bf16 tie -> 1
        1.0 + 3.0 / 256.0,  // bf16 tie -> 1 + 2^-6
    ]);
    v
}

fn same_bits_or_both_nan(
    what: &str,
    got: u32,
    want: u32,
    is_nan: impl Fn(u32) -> bool,
    input: u32,
) {
    assert!(
        got == want || (is_nan(got) && is_nan(want)),
        "{what}: input bits {input:#010x}: got {got:#06x}, want {want:#06x}"
    );
}

#[test]
fn casts_round_to_nearest_even_bit_exactly() {
    let dev = common::device(Schedule::Forward);
    let x = cast_inputs();
    let dx = dev.htod(&x).unwrap();
    for kind in KINDS {
        let mut out = dev.alloc_zeros::<u16>(x.len()).unwrap();
        cast_to_half(&dev, kind, &mut out, &dx).unwrap();
        let got = dev.dtoh(&out).unwrap();
        let half_nan = |b: u32| match kind {
            HalfKind::Bf16 => bf16::from_bits(b as u16).is_nan(),
            HalfKind::F16 => f16::from_bits(b as u16).is_nan(),
        };
        for (&v, &g) in x.iter().zip(&got) {
            let what = format!("cast_to_half {kind:?}");
            same_bits_or_both_nan(
                &what,
                g as u32,
                to_bits(kind, v) as u32,
                half_nan,
                v.to_bits(),
            );
        }
        println!("cast_to_half {kind:?}: {} inputs bit-exact", x.len());

        // Widening: every one of the 65536 bit patterns.
        let all: Vec<u16> = (0..=0xffffu16).collect();
        let dall = dev.htod(&all).unwrap();
        let mut wide = dev.alloc_zeros::<f32>(all.len()).unwrap();
        cast_from_half(&dev, kind, &mut wide, &dall).unwrap();
        let got = dev.dtoh(&wide).unwrap();
        let f32_nan = |b: u32| f32::from_bits(b).is_nan();
        for (&h, &g) in all.iter().zip(&got) {
            let what = format!("cast_from_half {kind:?}");
            let want = from_bits(kind, h).to_bits();
            same_bits_or_both_nan(&what, g.to_bits(), want, f32_nan, h as u32);
        }
        println!("cast_from_half {kind:?}: all 65536 patterns bit-exact");
    }
    // Length mismatch is an error.
    let mut short = dev.alloc_zeros::<u16>(3).unwrap();
    assert!(cast_to_half(&dev, HalfKind::F16, &mut short, &dx).is_err());
}
