//! The emulator itself: deliberately broken kernels (kernels/tests/emu_checks.cu) must be caught,
//! with an error naming the kernel and the thread, or with poisoned (NaN) results, never a hang;
//! warp shuffles/votes must follow the PTX rules; and the cost of a fiber switch is measured.

// The f16/bf16 conversion cases are exact binary fractions and a pi-like value, written out in full on purpose.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

use std::time::Instant;

mod common;

use culturemert_raw::device::registry as k;
use culturemert_raw::device::{CudaDevice, KernelArgs, LaunchConfig, Schedule};

fn dev(order: Schedule) -> CudaDevice {
    CudaDevice::emulated_with(order)
}

/// Launches a one-output-buffer kernel and returns the error message (the launch must fail).
fn launch_err(
    order: Schedule,
    kernel: &culturemert_raw::device::Kernel,
    grid: u32,
    block: u32,
) -> String {
    let d = dev(order);
    let mut out = d.alloc_zeros::<f32>((grid * block) as usize).unwrap();
    let cfg = LaunchConfig::new((grid, 1, 1), (block, 1, 1));
    let e = d
        .launch(kernel, cfg, KernelArgs::new().buf_mut(&mut out))
        .expect_err("the emulator must reject this kernel");
    let msg = format!("{e:#}");
    println!("{order:?}: {msg}");
    assert!(
        msg.contains(kernel.name),
        "error must name the kernel: {msg}"
    );
    msg
}

#[test]
fn missing_syncthreads_is_caught_under_both_orders() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    // Each thread reads its right neighbour's shared slot without a barrier: whichever order the
    // fibers run in, some thread reads a slot that is still poisoned (0xFF bytes = NaN).
    let n = 100;
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    for order in [Schedule::Forward, Schedule::Reverse] {
        let d = dev(order);
        let x = d.htod(&input).unwrap();
        let mut out = d.alloc_zeros::<f32>(n).unwrap();
        let cfg = LaunchConfig::new((2, 1, 1), (64, 1, 1));
        d.launch(
            &k::BROKEN_MISSING_SYNC,
            cfg,
            KernelArgs::new().buf_mut(&mut out).buf(&x).i32(n as i32),
        )
        .unwrap();
        let got = d.dtoh(&out).unwrap();
        let nan = got.iter().filter(|v| v.is_nan()).count();
        println!("{order:?}: {nan} of {n} outputs read unwritten shared memory");
        assert!(
            nan > 0,
            "{order:?}: missing __syncthreads went unnoticed: {got:?}"
        );
    }
}

#[test]
#[cfg_attr(
    culturemert_emu_asan,
    ignore = "AddressSanitizer aborts on this read (see the asan test)"
)]
fn out_of_bounds_dynamic_shared_read_is_poisoned() {
    // The last thread of each block reads tile[blockDim.x], one past the dynamic allocation.
    let (n, block) = (96usize, 32u32);
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let d = dev(Schedule::Forward);
    let x = d.htod(&input).unwrap();
    let mut out = d.alloc_zeros::<f32>(n).unwrap();
    let cfg = LaunchConfig::new((3, 1, 1), (block, 1, 1)).with_shared(block * 4);
    d.launch(
        &k::BROKEN_OOB_SHARED,
        cfg,
        KernelArgs::new().buf_mut(&mut out).buf(&x).i32(n as i32),
    )
    .unwrap();
    let got = d.dtoh(&out).unwrap();
    for (i, v) in got.iter().enumerate() {
        if i % block as usize == block as usize - 1 {
            assert!(
                v.is_nan(),
                "out-of-bounds read at {i} gave {v}, expected poison"
            );
        } else {
            assert_eq!(*v, (2 * i + 1) as f32, "in-bounds result at {i}");
        }
    }
}

#[test]
fn divergent_barrier_is_an_error() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    for order in [Schedule::Forward, Schedule::Reverse] {
        let msg = launch_err(order, &k::BROKEN_DIVERGENT_BARRIER, 1, 64);
        assert!(
            msg.contains("divergent __syncthreads") && msg.contains("emu_checks.cu:"),
            "{msg}"
        );
    }
}

#[test]
fn deadlock_is_an_error_not_a_hang() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    for order in [Schedule::Forward, Schedule::Reverse] {
        let msg = launch_err(order, &k::BROKEN_DEADLOCK, 1, 64);
        assert!(
            msg.contains("deadlock") && msg.contains("thread (0,0,0) waits at __syncwarp"),
            "{msg}"
        );
    }
}

#[test]
fn barrier_after_early_exit_is_an_error() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    let d = dev(Schedule::Forward);
    let mut out = d.alloc_zeros::<f32>(64).unwrap();
    let cfg = LaunchConfig::new((1, 1, 1), (64, 1, 1));
    let e = d
        .launch(
            &k::BROKEN_BARRIER_AFTER_EXIT,
            cfg,
            KernelArgs::new().buf_mut(&mut out).i32(40),
        )
        .unwrap_err();
    let msg = format!("{e:#}");
    println!("{msg}");
    assert!(
        msg.contains("broken_barrier_after_exit") && msg.contains("exited"),
        "{msg}"
    );
    // Reverse order: the exiting threads (63..40) run first, then thread 39 reaches the barrier.
    let d = dev(Schedule::Reverse);
    let e = d
        .launch(
            &k::BROKEN_BARRIER_AFTER_EXIT,
            cfg,
            KernelArgs::new().buf_mut(&mut out).i32(40),
        )
        .unwrap_err();
    let msg = format!("{e:#}");
    println!("{msg}");
    assert!(
        msg.contains("reached by thread (39,0,0)") && msg.contains("after 24 thread(s)"),
        "{msg}"
    );
}

#[test]
fn shuffle_from_non_participating_lane_is_an_error() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    let msg = launch_err(Schedule::Forward, &k::BROKEN_SHFL_NONPARTICIPATING, 1, 32);
    assert!(
        msg.contains("reads lane 16 which is not in the mask 0x0000ffff"),
        "{msg}"
    );
}

#[test]
fn trap_names_block_and_thread() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    let msg = launch_err(Schedule::Forward, &k::BROKEN_TRAP, 3, 32);
    assert!(
        msg.contains("__trap()") && msg.contains("thread (5,0,0) of block (1,0,0)"),
        "{msg}"
    );
}

#[test]
fn warp_shuffles_and_votes_follow_ptx_rules() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    // Expected values from the CUDA programming guide's definitions (width-8 segments for idx/up/down).
    let mut want = vec![0i32; 32 * 8];
    for lane in 0..32i32 {
        let seg = lane & !7;
        let o = &mut want[lane as usize * 8..][..8];
        o[0] = (seg + 3) * 10;
        o[1] = if lane - 2 >= seg {
            (lane - 2) * 10
        } else {
            lane * 10
        };
        o[2] = if lane + 3 < seg + 8 {
            (lane + 3) * 10
        } else {
            lane * 10
        };
        o[3] = (lane ^ 5) * 10;
        o[4] = (0..32).filter(|l| l % 3 == 0).fold(0u32, |m, l| m | 1 << l) as i32;
        o[5] = 1;
        o[6] = 0;
        o[7] = 8;
    }
    for order in [Schedule::Forward, Schedule::Reverse, Schedule::Random(3)] {
        let d = dev(order);
        let mut out = d.alloc_zeros::<i32>(32 * 8).unwrap();
        d.launch(
            &k::PROBE_WARP_OPS,
            LaunchConfig::new((1, 1, 1), (32, 1, 1)),
            KernelArgs::new().buf_mut(&mut out),
        )
        .unwrap();
        assert_eq!(d.dtoh(&out).unwrap(), want, "{order:?}");
    }
}

#[test]
fn fiber_switch_cost() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    // 4 blocks x 256 threads x 2000 barriers: one resume + yield per thread per barrier.
    let (blocks, threads, iters) = (4u32, 256u32, 2000i32);
    let d = dev(Schedule::Forward);
    let mut out = d.alloc_zeros::<i32>(blocks as usize).unwrap();
    let cfg = LaunchConfig::new((blocks, 1, 1), (threads, 1, 1));
    let t = Instant::now();
    d.launch(
        &k::PROBE_BARRIER_LOOP,
        cfg,
        KernelArgs::new().buf_mut(&mut out).i32(iters),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let switches = blocks as f64 * threads as f64 * iters as f64;
    println!(
        "fiber round trip (resume + yield at a barrier): {:.1} ns",
        secs * 1e9 / switches
    );
    let s = iters * (iters - 1) / 2;
    assert_eq!(d.dtoh(&out).unwrap(), vec![s; blocks as usize]);
}

/// Built with `CULTUREMERT_EMU_ASAN=1`: out-of-bounds shared reads (dynamic: exact-size buffer;
/// static: red zones from -fsanitize-sections) abort with an ASan report. Each kernel runs in a
/// child process (this test binary, re-run with CULTUREMERT_ASAN_CHILD naming the kernel).
#[cfg(culturemert_emu_asan)]
#[test]
fn out_of_bounds_shared_reads_are_reported_by_asan() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    if let Ok(name) = std::env::var("CULTUREMERT_ASAN_CHILD") {
        let kernel = culturemert_raw::device::registry::find(&name).unwrap();
        let d = dev(Schedule::Forward);
        let x = d.htod(&[1.0f32; 32]).unwrap();
        let mut out = d.alloc_zeros::<f32>(32).unwrap();
        let cfg = LaunchConfig::new((1, 1, 1), (32, 1, 1)).with_shared(32 * 4);
        d.launch(
            kernel,
            cfg,
            KernelArgs::new().buf_mut(&mut out).buf(&x).i32(32),
        )
        .unwrap();
        return;
    }
    for (name, report) in [
        ("broken_oob_shared", "heap-buffer-overflow"),
        ("broken_oob_static_shared", "global-buffer-overflow"),
    ] {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "out_of_bounds_shared_reads_are_reported_by_asan",
                "--test-threads=1",
            ])
            .env("CULTUREMERT_ASAN_CHILD", name)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        println!("{stderr}");
        assert!(!child.status.success(), "{name}: the child must abort");
        assert!(
            stderr.contains(report) && stderr.contains(name),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn half_and_bfloat16_conversions_round_to_nearest_even() {
    if common::skip_unless_emulator("tests the emulator's own checks") {
        return;
    }
    // Independent truth: the `half` crate (IEEE round-to-nearest-even). Edge values: ties, the
    // largest finite f16, overflow to inf, f16 subnormals and underflow, NaN, signed zero.
    let mut x: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.5,
        65504.0,
        65519.0,
        65520.0,
        1e6,
        -1e6,
        6.1e-5,
        5.96e-8,
        2.9e-8,
        3.0e-8,
        1e-10,
        1.0009765625,
        1.00048828125,
        1.00146484375,
        3.14159265,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        1.00390625,
        1.01171875,
        3.0e38,
    ];
    let mut s = 12345u32;
    for _ in 0..2000 {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        x.push(f32::from_bits(s & 0x7fff_ffff | (s & 1) << 31)); // random bit patterns (incl. NaN)
    }
    let n = x.len();
    let d = dev(Schedule::Forward);
    let gx = d.htod(&x).unwrap();
    let mut bits = d.alloc::<u16>(2 * n).unwrap();
    let mut back = d.alloc::<f32>(2 * n).unwrap();
    let cfg = LaunchConfig::for_elements(n, 128, 1024);
    let args = KernelArgs::new()
        .buf_mut(&mut bits)
        .buf_mut(&mut back)
        .buf(&gx)
        .i32(n as i32);
    d.launch(&k::PROBE_HALF_CONVERSIONS, cfg, args).unwrap();
    let (bits, back) = (d.dtoh(&bits).unwrap(), d.dtoh(&back).unwrap());
    for (i, &v) in x.iter().enumerate() {
        let (h, b) = (half::f16::from_f32(v), half::bf16::from_f32(v));
        if v.is_nan() {
            assert!(
                back[2 * i].is_nan() && back[2 * i + 1].is_nan(),
                "NaN {v:?} must stay NaN"
            );
            continue;
        }
        assert_eq!(
            bits[2 * i],
            h.to_bits(),
            "f16 of {v:e} ({:#x})",
            v.to_bits()
        );
        assert_eq!(
            bits[2 * i + 1],
            b.to_bits(),
            "bf16 of {v:e} ({:#x})",
            v.to_bits()
        );
        assert_eq!(
            back[2 * i].to_bits(),
            h.to_f32().to_bits(),
            "f16 -> f32 of {v:e}"
        );
        assert_eq!(
            back[2 * i + 1].to_bits(),
            b.to_f32().to_bits(),
            "bf16 -> f32 of {v:e}"
        );
    }
}
