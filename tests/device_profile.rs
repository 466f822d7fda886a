//! The launch profile and the roofline cost model (`bench-device --profile`): recorded launches carry
//! the kernel and its arguments, the cost of a GEMM / attention launch equals the closed form computed
//! here, a kernel without a rule has no cost (never an invented one), and the table's sums are the sums
//! of its rows. Under CULTUREMERT_TEST_DEVICE=cuda every launch also has a GPU time from CUDA events.

mod common;

use culturemert_raw::cli::device_profile::{aggregate, bound_sum};
use culturemert_raw::cuda::{attention, gemm};
use culturemert_raw::device::cost::{launch_cost, Unit};
use culturemert_raw::device::roofline::{self, Peaks};
use culturemert_raw::device::{ArgDesc, LaunchRecord, Schedule};
use culturemert_raw::ops::attention::AttentionShape;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn gemm_launch_cost_is_2mnk_and_its_operand_bytes() {
    let (m, n, k) = (37usize, 45usize, 29usize);
    let dev = common::device(Schedule::Forward);
    let a = dev.htod(&common::random(m * k, 1, -1.0, 1.0)).unwrap();
    let b = dev.htod(&common::random(n * k, 2, -1.0, 1.0)).unwrap();
    let bias = dev.htod(&common::random(n, 3, -1.0, 1.0)).unwrap();
    let mut c = dev.alloc_zeros::<f32>(m * n).unwrap();
    dev.start_profile();
    gemm::sgemm(
        &dev,
        m,
        n,
        k,
        &a,
        false,
        &b,
        true,
        Some(&bias),
        &mut c,
        true,
    )
    .unwrap();
    let recs = dev.finish_profile().unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.kernel, "gemm_f32_nt");
    assert!(r.args.contains(&ArgDesc::Int(m as i64)));
    if common::test_device() == common::TestDevice::Cuda {
        assert!(r.gpu_ms.is_some_and(|t| t > 0.0), "{r:?}");
    } else {
        assert!(r.gpu_ms.is_none());
    }
    let cost = launch_cost(r).unwrap();
    assert_eq!(cost.unit, Unit::F32);
    assert!(close(cost.flops, 2.0 * (m * n * k) as f64), "{cost:?}");
    // A and B read, C read and written (accumulate), bias read: f32 each.
    let bytes = 4.0 * (m * k + k * n + 2 * m * n + n) as f64;
    assert!(close(cost.bytes, bytes), "{cost:?} vs {bytes}");
    // Recording stopped: a second launch is not recorded.
    gemm::sgemm(&dev, m, n, k, &a, false, &b, true, None, &mut c, false).unwrap();
    assert!(dev.finish_profile().unwrap().is_empty());
}

#[test]
fn attention_forward_counts_two_products_per_head() {
    let s = AttentionShape {
        batch: 2,
        seq: 19,
        heads: 3,
        head_dim: 8,
    };
    let n = s.batch * s.seq * s.heads * s.head_dim;
    let dev = common::device(Schedule::Reverse);
    let q = dev.htod(&common::random(n, 4, -1.0, 1.0)).unwrap();
    let mut out = dev.alloc::<f32>(n).unwrap();
    let mut lse = dev.alloc::<f32>(s.batch * s.heads * s.seq).unwrap();
    dev.start_profile();
    attention::attention_forward(&dev, &mut out, &mut lse, &q, &q, &q, None, &s, 0.35, None)
        .unwrap();
    let recs = dev.finish_profile().unwrap();
    let cost = launch_cost(&recs[0]).unwrap();
    let t = s.seq as f64;
    let want = 2.0 * 2.0 * (s.batch * s.heads * s.head_dim) as f64 * t * t;
    assert!(close(cost.flops, want), "{cost:?} vs {want}");
    // q, k, v, out of n floats and lse; the null key mask adds nothing.
    let bytes = 4.0 * (4 * n + s.batch * s.heads * s.seq) as f64;
    assert!(close(cost.bytes, bytes), "{cost:?} vs {bytes}");
}

fn record(kernel: &'static str, args: Vec<ArgDesc>, gpu_ms: Option<f64>) -> LaunchRecord {
    LaunchRecord {
        kernel,
        grid: (10, 2, 1),
        block: (256, 1, 1),
        args,
        indirect_bytes: 0,
        gpu_ms,
    }
}

#[test]
fn unknown_kernels_have_no_cost_and_stay_out_of_the_bound() {
    let f32buf = |len| ArgDesc::Buf { len, elem: 4 };
    let recs = vec![
        record(
            "add_f32",
            vec![f32buf(1000), f32buf(1000), f32buf(1000), ArgDesc::Int(1000)],
            Some(0.5),
        ),
        record(
            "add_f32",
            vec![f32buf(10), f32buf(10), f32buf(10), ArgDesc::Int(10)],
            Some(0.25),
        ),
        record(
            "a_kernel_nobody_described",
            vec![f32buf(1 << 20)],
            Some(2.0),
        ),
        record(
            "gemm_tc_bf16",
            vec![
                f32buf(64 * 32),
                ArgDesc::Buf {
                    len: 64 * 16,
                    elem: 2,
                },
                ArgDesc::Buf {
                    len: 16 * 32,
                    elem: 2,
                },
                ArgDesc::Buf { len: 0, elem: 4 },
                ArgDesc::Int(64),
                ArgDesc::Int(32),
                ArgDesc::Int(16),
                ArgDesc::Int(0),
                ArgDesc::Int(1),
                ArgDesc::Int(0),
            ],
            Some(1.0),
        ),
    ];
    assert!(launch_cost(&recs[2]).is_none());
    let tc = launch_cost(&recs[3]).unwrap();
    assert_eq!(tc.unit, Unit::TensorHalf);
    assert!(close(tc.flops, 2.0 * 64.0 * 32.0 * 16.0));
    assert!(close(
        tc.bytes,
        2.0 * (64.0 * 16.0 + 16.0 * 32.0) + 4.0 * 64.0 * 32.0
    ));

    let peaks = roofline::builtin();
    let rows = aggregate(&recs, &peaks);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r.launches).sum::<usize>(), recs.len());
    let total_ms: f64 = rows.iter().filter_map(|r| r.gpu_ms).sum();
    assert!(close(total_ms, 3.75));
    // Sorted by time: the unknown kernel (2 ms) first.
    assert_eq!(rows[0].kernel, "a_kernel_nobody_described");
    assert!(rows[0].flops.is_none() && rows[0].bound_s[0].is_none());
    let add = rows.iter().find(|r| r.kernel == "add_f32").unwrap();
    assert_eq!(add.launches, 2);
    assert!(close(add.bytes.unwrap(), 4.0 * 3.0 * 1010.0));
    for (g, p) in peaks.iter().enumerate() {
        let (sum, unknown) = bound_sum(&rows, g);
        let by_hand: f64 = recs
            .iter()
            .filter_map(launch_cost)
            .map(|c| p.bound_s(&c))
            .sum();
        assert!(close(sum, by_hand), "{}: {sum} vs {by_hand}", p.name);
        assert_eq!(unknown, 1);
    }
}

#[test]
fn roofline_bound_is_the_slower_of_compute_and_memory() {
    let h200 = Peaks::lookup("NVIDIA H200").unwrap();
    assert_eq!(h200.name, "H200");
    assert!(close(h200.bandwidth, 4.8e12));
    assert_eq!(
        Peaks::lookup("NVIDIA H100 80GB HBM3").unwrap().name,
        "H100 SXM"
    );
    assert_eq!(Peaks::lookup("a100").unwrap().sms, 108);
    assert!(Peaks::lookup("NVIDIA GeForce RTX 4090").is_err());
    let custom = h200
        .clone()
        .with_overrides(Some(500.0), None, Some(2.0), Some(100))
        .unwrap();
    assert!(close(custom.tensor_half, 5e14) && close(custom.bandwidth, 2e12));
    assert!(close(custom.f32, h200.f32) && custom.sms == 100);
    assert!(h200
        .clone()
        .with_overrides(Some(-1.0), None, None, None)
        .is_err());

    let gemm = culturemert_raw::device::cost::Cost {
        flops: 2.0 * 4096f64.powi(3),
        bytes: 3.0 * 2.0 * 4096f64.powi(2),
        unit: Unit::TensorHalf,
    };
    assert!(h200.compute_bound(&gemm));
    assert!(close(h200.bound_s(&gemm), gemm.flops / 989.4e12));
    let stream = culturemert_raw::device::cost::Cost {
        flops: 1e6,
        bytes: 4.8e9,
        unit: Unit::F32,
    };
    assert!(!h200.compute_bound(&stream));
    assert!(close(h200.bound_s(&stream), 1e-3));
}
