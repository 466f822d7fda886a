//! Build script: the CUDA kernels in `kernels/*.cu`.
//! - Always: compiles them (and the emulator-only `kernels/tests/*.cu`) for the host emulator with g++
//!   (`-include kernels/emu/shim.h -x c++`), together with the fiber runtime `kernels/emu/runtime.cpp`.
//! - When libnvrtc is found (see `src/device/nvrtc.rs::locate`): compiles each `kernels/*.cu` to CUBIN
//!   for sm_80 and sm_90 and to compute_80 PTX, and embeds them; a compile error fails the build with
//!   the NVRTC log. Without NVRTC the sources are embedded for run-time compilation.
//! - Writes `$OUT_DIR/kernels.rs` (the kernel registry, included by `src/device/registry.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "src/device/nvrtc.rs"]
mod nvrtc;

/// Real architectures embedded as CUBIN; PTX for the first one is embedded for anything newer.
const CUBIN_ARCHS: [u32; 2] = [80, 90];
const PTX_ARCH: u32 = 80;

struct Module {
    name: String,
    path: PathBuf,
    kernels: Vec<String>,
    gpu: bool,
}

fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    v
}

/// Kernel names from the `EMU_EXPORT(name)` lines that follow every `__global__` function.
fn exported_kernels(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("EMU_EXPORT("))
        .filter_map(|rest| rest.split(')').next())
        .map(|n| n.trim().to_string())
        .collect()
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let kdir = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/device/nvrtc.rs");
    for var in [
        "CULTUREMERT_NVRTC",
        "CULTUREMERT_CUDA_INCLUDE",
        "CULTUREMERT_NO_NVRTC",
        "CULTUREMERT_EMU_ASAN",
        "CUDA_PATH",
        "CUDA_HOME",
        "VIRTUAL_ENV",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let mut modules = Vec::new();
    for (dir, gpu, prefix) in [
        (kdir.clone(), true, ""),
        (kdir.join("tests"), false, "tests_"),
    ] {
        for path in cu_files(&dir) {
            let src = std::fs::read_to_string(&path).unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy();
            modules.push(Module {
                name: format!("{prefix}{stem}"),
                kernels: exported_kernels(&src),
                path,
                gpu,
            });
        }
    }

    // ---- host emulator -------------------------------------------------------------------------
    let asan = std::env::var("CULTUREMERT_EMU_ASAN").is_ok_and(|v| v == "1");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++20")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag("-Wno-unknown-pragmas") // `#pragma unroll` is for NVRTC
        .include(&kdir)
        .flag("-include")
        .flag(kdir.join("emu/shim.h").to_str().unwrap())
        .flag("-x")
        .flag("c++")
        // Error sites read `kernels/x.cu:42`, not an absolute path.
        .flag(format!("-fmacro-prefix-map={}/=", root.display()))
        .file(kdir.join("emu/runtime.cpp"));
    println!("cargo:rustc-check-cfg=cfg(culturemert_emu_asan)");
    if asan {
        println!("cargo:rustc-cfg=culturemert_emu_asan");
        b.flag("-fsanitize=address")
            .flag("-fno-omit-frame-pointer")
            .flag("-fsanitize-sections=emu_shared");
        // Link the runtime; run the binaries with LD_PRELOAD=$(g++ -print-file-name=libasan.so) so its
        // malloc interceptors come first (see .ci/nvrtc.sh, kernel_asan_tests).
        println!("cargo:rustc-link-lib=dylib=asan");
    }
    for m in &modules {
        b.file(&m.path);
    }
    b.compile("culturemert_kernels_emu");

    // ---- NVRTC ---------------------------------------------------------------------------------
    let nvrtc = if std::env::var("CULTUREMERT_NO_NVRTC").is_ok_and(|v| v == "1") {
        None
    } else {
        nvrtc::locate().map(|p| nvrtc::Nvrtc::load(&p).unwrap_or_else(|e| panic!("{e}")))
    };
    let mut options = vec![format!("-I{}", kdir.display())];
    if let Some(inc) = nvrtc
        .as_ref()
        .and_then(|n| nvrtc::cuda_include_dir(&n.path))
    {
        options.push(format!("-I{}", inc.display()));
    }
    let gpu_modules: Vec<&Module> = modules.iter().filter(|m| m.gpu).collect();
    // Compile every (module, target) pair on its own thread: NVRTC is thread-safe.
    let mut targets: Vec<(usize, nvrtc::Target)> = Vec::new();
    if nvrtc.is_some() {
        for i in 0..gpu_modules.len() {
            targets.push((i, nvrtc::Target::Ptx(PTX_ARCH)));
            for a in CUBIN_ARCHS {
                targets.push((i, nvrtc::Target::Cubin(a)));
            }
        }
    }
    let results: Vec<Result<PathBuf, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|&(i, t)| {
                let m = gpu_modules[i];
                let (nv, opts, out) = (nvrtc.as_ref().unwrap(), &options, &out);
                s.spawn(move || {
                    let src = std::fs::read_to_string(&m.path).map_err(|e| e.to_string())?;
                    let file = format!("kernels/{}.cu", m.name);
                    let o = nv.compile(&file, &src, &[], t, opts)?;
                    let dst = match t {
                        nvrtc::Target::Ptx(a) => out.join(format!("{}.compute_{a}.ptx", m.name)),
                        nvrtc::Target::Cubin(a) => out.join(format!("{}.sm_{a}.cubin", m.name)),
                    };
                    std::fs::write(&dst, &o.image).map_err(|e| e.to_string())?;
                    Ok(dst)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !errors.is_empty() {
        eprintln!("{}", errors.join("\n\n"));
        panic!(
            "{} kernel compilation(s) failed with NVRTC (log above)",
            errors.len()
        );
    }

    // ---- registry --------------------------------------------------------------------------------
    let mut g = String::from("// @generated by build.rs from kernels/*.cu\n\n");
    let lit = |p: &Path| format!("{:?}", p.display().to_string());
    g.push_str("pub static HEADERS: &[(&str, &str)] = &[\n");
    let mut headers: Vec<PathBuf> = std::fs::read_dir(&kdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cuh"))
        .collect();
    headers.sort();
    for h in &headers {
        let name = h.file_name().unwrap().to_string_lossy();
        writeln!(g, "    ({name:?}, include_str!({})),", lit(h)).unwrap();
    }
    g.push_str("];\n\n");
    g.push_str("pub static MODULES: &[ModuleImages] = &[\n");
    for m in &gpu_modules {
        let have = nvrtc.is_some();
        let ptx = if have {
            format!(
                "Some(include_str!({}))",
                lit(&out.join(format!("{}.compute_{PTX_ARCH}.ptx", m.name)))
            )
        } else {
            "None".into()
        };
        let mut cubins = String::new();
        if have {
            for a in CUBIN_ARCHS {
                let p = out.join(format!("{}.sm_{a}.cubin", m.name));
                write!(cubins, "({a}, include_bytes!({}) as &[u8]), ", lit(&p)).unwrap();
            }
        }
        writeln!(
            g,
            "    ModuleImages {{ name: {:?}, source: include_str!({}), ptx: {ptx}, ptx_arch: {PTX_ARCH}, cubins: &[{cubins}] }},",
            m.name,
            lit(&m.path)
        )
        .unwrap();
    }
    g.push_str("];\n\nextern \"C\" {\n");
    for m in &modules {
        for k in &m.kernels {
            writeln!(g, "    fn emu_{k}(grid: EmuDim3, block: EmuDim3, smem: u32, params: *mut *mut c_void) -> i32;").unwrap();
        }
    }
    g.push_str("}\n\n");
    for m in &modules {
        for k in &m.kernels {
            writeln!(
                g,
                "pub static {}: Kernel = Kernel {{ name: {k:?}, module: {:?}, gpu: {}, emu: emu_{k} }};",
                k.to_uppercase(),
                m.name,
                m.gpu
            )
            .unwrap();
        }
    }
    g.push_str("\n/// Every kernel, GPU and emulator-only.\npub static ALL: &[&Kernel] = &[\n");
    for m in &modules {
        for k in &m.kernels {
            writeln!(g, "    &{},", k.to_uppercase()).unwrap();
        }
    }
    g.push_str("];\n");
    std::fs::write(out.join("kernels.rs"), g).unwrap();
}
