//! The test helpers that make test binaries portable: golden files found relative to the executable
//! (or through `CULTUREMERT_GOLDEN_DIR`), and the device selected by `CULTUREMERT_TEST_DEVICE`.

mod common;

use common::{parse_test_device, resolve_golden_dir, TestDevice};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cmr-golden-dir-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn env_var_wins() {
    let got = resolve_golden_dir(
        Some(PathBuf::from("/somewhere/goldens")),
        Some(Path::new("/bundle/tests/x")),
        Path::new("/src"),
    );
    assert_eq!(got, Path::new("/somewhere/goldens"));
}

#[test]
fn bundle_layout_is_found_by_walking_up_from_the_executable() {
    let root = scratch("bundle");
    std::fs::create_dir_all(root.join("reference/golden")).unwrap();
    std::fs::create_dir_all(root.join("bin/tests")).unwrap();
    let exe = root.join("bin/tests/model_golden-0123");
    // An empty env var is ignored like an absent one.
    let got = resolve_golden_dir(Some(PathBuf::new()), Some(&exe), Path::new("/src"));
    assert_eq!(got, root.join("reference/golden"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn falls_back_to_the_source_tree() {
    let root = scratch("nothing");
    let exe = root.join("deps/t");
    let got = resolve_golden_dir(None, Some(&exe), Path::new("/src/tree"));
    assert_eq!(got, Path::new("/src/tree/reference/golden"));
    assert_eq!(
        resolve_golden_dir(None, None, Path::new("/m")),
        Path::new("/m/reference/golden")
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn this_checkout_resolves_to_real_goldens() {
    let d = common::golden_dir();
    assert!(d.join("tiny_postln/config.json").is_file(), "{d:?}");
}

#[test]
fn test_device_values() {
    assert_eq!(parse_test_device(None), Ok(TestDevice::Emu));
    assert_eq!(parse_test_device(Some("")), Ok(TestDevice::Emu));
    assert_eq!(parse_test_device(Some("emu")), Ok(TestDevice::Emu));
    assert_eq!(parse_test_device(Some("cuda")), Ok(TestDevice::Cuda));
    let e = parse_test_device(Some("gpu")).unwrap_err();
    assert!(e.contains("emu or cuda"), "{e}");
}
