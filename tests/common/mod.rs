//! Helpers shared by the test files: deterministic inputs, the device under test
//! (`CULTUREMERT_TEST_DEVICE=emu|cuda`) and the golden files (`CULTUREMERT_GOLDEN_DIR`).
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};

use culturemert_raw::device::{CudaDevice, Schedule};

/// Deterministic uniform values in [lo, hi) (the crate's splitmix64, 24-bit uniforms).
pub fn random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = culturemert_raw::rng::SplitMix64::new(seed);
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

/// Which CUDA runtime the kernel, model and training tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestDevice {
    /// The host emulator (default; what CI runs).
    Emu,
    /// GPU 0 through the driver.
    Cuda,
}

/// Parses a `CULTUREMERT_TEST_DEVICE` value (`emu` when unset or empty).
pub fn parse_test_device(v: Option<&str>) -> Result<TestDevice, String> {
    match v.map(str::trim) {
        None | Some("") | Some("emu") => Ok(TestDevice::Emu),
        Some("cuda") => Ok(TestDevice::Cuda),
        Some(other) => Err(format!(
            "CULTUREMERT_TEST_DEVICE={other:?}: expected emu or cuda"
        )),
    }
}

/// `CULTUREMERT_TEST_DEVICE` (a bad value fails the test that asks).
pub fn test_device() -> TestDevice {
    parse_test_device(std::env::var("CULTUREMERT_TEST_DEVICE").ok().as_deref())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The device a test runs its kernels on: the emulator with scheduling `order`, or GPU 0 (where the
/// order does not apply). Under `cuda` a missing GPU fails the test: it was asked for.
pub fn device(order: Schedule) -> CudaDevice {
    match test_device() {
        TestDevice::Emu => CudaDevice::emulated_with(order),
        TestDevice::Cuda => CudaDevice::driver(0)
            .unwrap_or_else(|e| panic!("CULTUREMERT_TEST_DEVICE=cuda but no GPU: {e:#}")),
    }
}

/// The scheduling orders a test loops over: all of them on the emulator, one on a GPU (the order is
/// the emulator's; a GPU run repeats the same launches).
pub fn orders(all: &[Schedule]) -> Vec<Schedule> {
    match test_device() {
        TestDevice::Emu => all.to_vec(),
        TestDevice::Cuda => all[..1].to_vec(),
    }
}

/// True (and prints why) when the calling test checks the emulator itself and must be skipped on a GPU.
pub fn skip_unless_emulator(what: &str) -> bool {
    if test_device() == TestDevice::Emu {
        return false;
    }
    println!("skipped under CULTUREMERT_TEST_DEVICE=cuda: emulator-only ({what})");
    true
}

/// The golden files: `CULTUREMERT_GOLDEN_DIR`, else `reference/golden` in the first ancestor of the
/// test executable that has one (a bundle copied to another machine), else the source tree.
pub fn golden_dir() -> PathBuf {
    resolve_golden_dir(
        std::env::var_os("CULTUREMERT_GOLDEN_DIR").map(PathBuf::from),
        std::env::current_exe().ok().as_deref(),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

/// [`golden_dir`] with its three inputs explicit (tested in `tests/golden_dir.rs`).
pub fn resolve_golden_dir(env: Option<PathBuf>, exe: Option<&Path>, manifest: &Path) -> PathBuf {
    if let Some(d) = env.filter(|d| !d.as_os_str().is_empty()) {
        return d;
    }
    if let Some(found) = exe
        .and_then(Path::parent)
        .into_iter()
        .flat_map(Path::ancestors)
        .map(|a| a.join("reference/golden"))
        .find(|d| d.is_dir())
    {
        return found;
    }
    manifest.join("reference/golden")
}

/// A file or directory under the golden directory.
pub fn golden(rel: &str) -> PathBuf {
    golden_dir().join(rel)
}

/// Largest |got - want| / (1 + |want|); panics on length mismatch or NaN.
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            assert!(g.is_finite(), "non-finite result {g} (want {w})");
            (g - w).abs() / (1.0 + w.abs())
        })
        .fold(0.0, f32::max)
}

/// Asserts `max_rel_err(got, want) <= tol`, printing the error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let err = max_rel_err(got, want);
    println!("{what}: max rel err {err:.3e} (tol {tol:.1e})");
    assert!(err <= tol, "{what}: max rel err {err:.3e} > {tol:.1e}");
}
