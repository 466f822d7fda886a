//! NVRTC loaded by path with `libloading`: compile kernels to PTX or CUBIN without a GPU.
//!
//! This file is shared by `build.rs` (through `#[path]`) and by the library (`kernels` command,
//! run-time JIT), so it depends on `std` and `libloading` only and reports errors as `String`s.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};

type Prog = *mut std::ffi::c_void;
type CreateFn = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Prog) -> c_int;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

/// What to produce: PTX for a virtual architecture, or CUBIN for a real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `compute_XY` PTX (loadable by any later GPU through the driver JIT).
    Ptx(u32),
    /// `sm_XY` CUBIN (ptxas runs, so registers/spills are known).
    Cubin(u32),
}

/// Result of one compilation: the image and the NVRTC log (ptxas statistics when asked for).
pub struct Output {
    pub image: Vec<u8>,
    pub log: String,
}

/// A loaded libnvrtc. Keeping it alive also lets a later `dlopen` by soname (cudarc) find it.
pub struct Nvrtc {
    lib: libloading::Library,
    pub path: PathBuf,
}

/// Candidate library file names inside a directory, newest first.
const NAMES: &[&str] = &[
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
];

fn lib_in_dir(dir: &Path) -> Option<PathBuf> {
    NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn venv_lib(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pys: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        })
        .collect();
    pys.sort();
    pys.iter()
        .find_map(|py| lib_in_dir(&py.join("site-packages/nvidia/cuda_nvrtc/lib")))
}

/// Where libnvrtc is: `CULTUREMERT_NVRTC` (the library or its directory), then the usual CUDA
/// locations (`CUDA_PATH`, `CUDA_HOME`, /usr/local/cuda, the distribution's lib dir), then the
/// Python virtual environment named by `VIRTUAL_ENV` (the `nvidia-cuda-nvrtc-cu12` wheel).
pub fn locate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CULTUREMERT_NVRTC").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_dir() {
            lib_in_dir(&p)
        } else {
            Some(p).filter(|p| p.is_file())
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = std::env::var_os(var) {
            let root = PathBuf::from(root);
            dirs.push(root.join("lib64"));
            dirs.push(root.join("targets/x86_64-linux/lib"));
        }
    }
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/opt/cuda/lib64",
    ] {
        dirs.push(PathBuf::from(d));
    }
    if let Some(found) = dirs.iter().find_map(|d| lib_in_dir(d)) {
        return Some(found);
    }
    std::env::var_os("VIRTUAL_ENV").and_then(|v| venv_lib(Path::new(&v)))
}

/// The directory holding `cuda_fp16.h`/`cuda_bf16.h`: `CULTUREMERT_CUDA_INCLUDE`, else next to the
/// library (toolkit `lib64/../include`, or the wheel's `nvidia/cuda_runtime/include`).
pub fn cuda_include_dir(lib: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CULTUREMERT_CUDA_INCLUDE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let dir = lib.parent()?;
    [
        dir.join("../include"),
        dir.join("../../cuda_runtime/include"),
        dir.join("../../../include"),
    ]
    .into_iter()
    .find(|d| d.join("cuda_fp16.h").is_file())
}

impl Nvrtc {
    /// Loads libnvrtc from `path`.
    pub fn load(path: &Path) -> Result<Nvrtc, String> {
        // SAFETY: loading libnvrtc runs its initialisers only; it is a well-behaved C library.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load libnvrtc from {}: {e}", path.display()))?;
        Ok(Nvrtc {
            lib,
            path: path.to_path_buf(),
        })
    }

    /// Loads the library found by [`locate`].
    pub fn load_default() -> Result<Nvrtc, String> {
        let path = locate().ok_or_else(|| {
            "libnvrtc not found: set CULTUREMERT_NVRTC to libnvrtc.so* (e.g. from the \
             nvidia-cuda-nvrtc-cu12 wheel, see .ci/nvrtc.sh) or install the CUDA toolkit"
                .to_string()
        })?;
        Nvrtc::load(&path)
    }

    fn sym<T: Copy>(&self, name: &str) -> Result<T, String> {
        // SAFETY: the symbol types above match the NVRTC C API.
        unsafe { self.lib.get::<T>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| format!("libnvrtc {}: missing {name}: {e}", self.path.display()))
    }

    /// NVRTC version (major, minor).
    pub fn version(&self) -> Result<(i32, i32), String> {
        let f: VersionFn = self.sym("nvrtcVersion")?;
        let (mut a, mut b) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { f(&mut a, &mut b) };
        Ok((a, b))
    }

    /// Compiles `source` (named `name` in messages). `headers`: (include name, contents) served
    /// from memory; `options`: extra NVRTC options (include paths, `--ptxas-options=-v`, ...).
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        headers: &[(&str, &str)],
        target: Target,
        options: &[String],
    ) -> Result<Output, String> {
        let create: CreateFn = self.sym("nvrtcCreateProgram")?;
        let compile: CompileFn = self.sym("nvrtcCompileProgram")?;
        let log_size: SizeFn = self.sym("nvrtcGetProgramLogSize")?;
        let get_log: GetFn = self.sym("nvrtcGetProgramLog")?;
        let destroy: DestroyFn = self.sym("nvrtcDestroyProgram")?;
        let (image_size, get_image): (SizeFn, GetFn) = match target {
            Target::Ptx(_) => (self.sym("nvrtcGetPTXSize")?, self.sym("nvrtcGetPTX")?),
            Target::Cubin(_) => (self.sym("nvrtcGetCUBINSize")?, self.sym("nvrtcGetCUBIN")?),
        };
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("{name}: NUL byte in input"));
        let c_src = cstr(source)?;
        let c_name = cstr(name)?;
        let h_src: Vec<CString> = headers
            .iter()
            .map(|h| cstr(h.1))
            .collect::<Result<_, _>>()?;
        let h_name: Vec<CString> = headers
            .iter()
            .map(|h| cstr(h.0))
            .collect::<Result<_, _>>()?;
        let h_src_p: Vec<*const c_char> = h_src.iter().map(|c| c.as_ptr()).collect();
        let h_name_p: Vec<*const c_char> = h_name.iter().map(|c| c.as_ptr()).collect();
        let arch = match target {
            Target::Ptx(a) => format!("--gpu-architecture=compute_{a}"),
            Target::Cubin(a) => format!("--gpu-architecture=sm_{a}"),
        };
        let mut opts = vec![arch, "--std=c++17".to_string()];
        opts.extend(options.iter().cloned());
        let c_opts: Vec<CString> = opts.iter().map(|o| cstr(o)).collect::<Result<_, _>>()?;
        let c_opts_p: Vec<*const c_char> = c_opts.iter().map(|c| c.as_ptr()).collect();

        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live NUL-terminated string; arrays have the given length.
        unsafe {
            let rc = create(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                headers.len() as c_int,
                h_src_p.as_ptr(),
                h_name_p.as_ptr(),
            );
            if rc != 0 {
                return Err(format!("{name}: nvrtcCreateProgram failed ({rc})"));
            }
            let rc = compile(prog, c_opts_p.len() as c_int, c_opts_p.as_ptr());
            let mut n = 0usize;
            log_size(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            get_log(prog, log.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&log[..n.saturating_sub(1)]).into_owned();
            if rc != 0 {
                destroy(&mut prog);
                return Err(format!(
                    "{name}: NVRTC compile error ({:?}):\n{log}",
                    target
                ));
            }
            let mut size = 0usize;
            image_size(prog, &mut size);
            let mut image = vec![0u8; size];
            get_image(prog, image.as_mut_ptr() as *mut c_char);
            destroy(&mut prog);
            if let Target::Ptx(_) = target {
                while image.last() == Some(&0) {
                    image.pop();
                }
            }
            Ok(Output { image, log })
        }
    }
}

/// Per-kernel resource use parsed from a `--ptxas-options=-v` log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasStats {
    pub kernel: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_frame: u32,
    pub shared_bytes: u32,
}

/// Parses ptxas `-v` output: "Function properties for K" / "N bytes stack frame, S bytes spill
/// stores, L bytes spill loads" / "Used R registers, ... B bytes smem".
pub fn parse_ptxas_log(log: &str) -> Vec<PtxasStats> {
    fn number_before(line: &str, word: &str) -> Option<u32> {
        let i = line.find(word)?;
        line[..i].split_whitespace().last()?.parse().ok()
    }
    let mut out: Vec<PtxasStats> = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(PtxasStats {
                kernel: name,
                ..Default::default()
            });
        } else if let Some(cur) = out.last_mut() {
            if line.contains("bytes stack frame") {
                cur.stack_frame = number_before(line, "bytes stack frame").unwrap_or(0);
                cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                cur.registers = number_before(line, "registers").unwrap_or(0);
                cur.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}
