//! The NVRTC side: the loader, compile errors with their log, ptxas statistics, and the images
//! build.rs embedded. Needs libnvrtc (`source .ci/nvrtc.sh`); without it the tests say so and pass
//! (the build then embeds sources only, which `registry_images_match_the_build` checks).

use culturemert_raw::device::nvrtc::{self, Nvrtc, Target};
use culturemert_raw::device::registry;

fn nvrtc_or_skip() -> Option<Nvrtc> {
    match nvrtc::locate() {
        Some(p) => Some(Nvrtc::load(&p).expect("libnvrtc found but not loadable")),
        None => {
            eprintln!("libnvrtc not found: NVRTC tests skipped (source .ci/nvrtc.sh to run them)");
            None
        }
    }
}

#[test]
fn compile_error_returns_the_log() {
    let Some(nv) = nvrtc_or_skip() else { return };
    let src = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }";
    let err = nv
        .compile("broken.cu", src, &[], Target::Cubin(80), &[])
        .err()
        .expect("must fail");
    assert!(
        err.contains("broken.cu") && err.contains("undefined_name"),
        "{err}"
    );
}

#[test]
fn every_kernel_compiles_to_cubin_with_ptxas_stats() {
    let Some(nv) = nvrtc_or_skip() else { return };
    let opts = vec!["--ptxas-options=-v".to_string()];
    for m in registry::MODULES {
        let out = nv
            .compile(
                &format!("{}.cu", m.name),
                m.source,
                registry::HEADERS,
                Target::Cubin(90),
                &opts,
            )
            .unwrap();
        assert_eq!(
            &out.image[..4],
            b"\x7fELF",
            "{}: CUBIN is an ELF image",
            m.name
        );
        let stats = nvrtc::parse_ptxas_log(&out.log);
        let mut names: Vec<&str> = stats.iter().map(|s| s.kernel.as_str()).collect();
        names.sort();
        let mut want: Vec<&str> = registry::ALL
            .iter()
            .filter(|k| k.module == m.name)
            .map(|k| k.name)
            .collect();
        want.sort();
        assert_eq!(names, want, "{}: ptxas statistics for every kernel", m.name);
        assert!(
            stats.iter().all(|s| s.registers > 0),
            "{}: {stats:?}",
            m.name
        );
    }
}

#[test]
fn ptxas_log_parsing() {
    let log = "ptxas info    : 0 bytes gmem\n\
               ptxas info    : Compiling entry function 'gemm_f32_nn' for 'sm_80'\n\
               ptxas info    : Function properties for gemm_f32_nn\n    \
               16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
               ptxas info    : Used 40 registers, used 1 barriers, 8704 bytes smem, 400 bytes cmem[0]\n";
    let s = nvrtc::parse_ptxas_log(log);
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(
        (
            s.kernel.as_str(),
            s.registers,
            s.spill_stores,
            s.spill_loads
        ),
        ("gemm_f32_nn", 40, 8, 12)
    );
    assert_eq!((s.stack_frame, s.shared_bytes), (16, 8704));
}

#[test]
fn registry_images_match_the_build() {
    // build.rs embeds CUBIN for sm_80 and sm_90 and compute_80 PTX exactly when it found NVRTC.
    let built_with_nvrtc = registry::MODULES[0].ptx.is_some();
    for m in registry::MODULES {
        assert!(
            m.source.contains("EMU_EXPORT("),
            "{}: source embedded",
            m.name
        );
        if built_with_nvrtc {
            let archs: Vec<u32> = m.cubins.iter().map(|c| c.0).collect();
            assert_eq!(archs, [80, 90], "{}", m.name);
            assert!(
                m.cubins.iter().all(|c| c.1.starts_with(b"\x7fELF")),
                "{}",
                m.name
            );
            assert!(m.ptx.unwrap().contains(".target sm_80"), "{}", m.name);
        } else {
            assert!(m.cubins.is_empty() && m.ptx.is_none(), "{}", m.name);
        }
    }
    // Every GPU kernel of the registry belongs to an embedded module; test kernels to none.
    for k in registry::ALL {
        assert_eq!(
            registry::MODULES.iter().any(|m| m.name == k.module),
            k.gpu,
            "{k:?}"
        );
    }
}
