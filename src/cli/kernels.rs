//! `culturemert-raw kernels`: compiles every CUDA kernel with NVRTC to CUBIN (ptxas `-v`) and prints
//! one line per kernel: registers, spill stores/loads, stack frame and static shared memory.
//! Needs libnvrtc only, no GPU (`CULTUREMERT_NVRTC`, a CUDA toolkit, or `VIRTUAL_ENV`).

use anyhow::{anyhow, bail, Context, Result};

use crate::device::nvrtc::{self, Nvrtc, Target};
use crate::device::registry;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture to compile for: sm_80 or sm_90 (repeatable; default both).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Vec<u32>,
    /// Exit non-zero when any kernel spills registers to local memory.
    #[arg(long)]
    pub fail_on_spill: bool,
}

fn parse_arch(s: &str) -> Result<u32, String> {
    s.strip_prefix("sm_")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 50)
        .ok_or_else(|| format!("expected sm_XY (e.g. sm_80, sm_90), got {s:?}"))
}

pub fn run(args: Args) -> Result<()> {
    let nv = Nvrtc::load_default().map_err(|e| anyhow!(e))?;
    let (major, minor) = nv.version().map_err(|e| anyhow!(e))?;
    println!("# NVRTC {major}.{minor} ({})", nv.path.display());
    let mut options = vec!["--ptxas-options=-v".to_string()];
    if let Some(inc) = nvrtc::cuda_include_dir(&nv.path) {
        options.push(format!("-I{}", inc.display()));
    }
    let archs = if args.arch.is_empty() {
        vec![80, 90]
    } else {
        args.arch.clone()
    };
    let mut spills = Vec::new();
    for arch in archs {
        for m in registry::MODULES {
            let file = format!("{}.cu", m.name);
            let out = nv
                .compile(
                    &file,
                    m.source,
                    registry::HEADERS,
                    Target::Cubin(arch),
                    &options,
                )
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("compiling kernels/{file} for sm_{arch}"))?;
            let stats = nvrtc::parse_ptxas_log(&out.log);
            if stats.is_empty() {
                bail!(
                    "kernels/{file}: no ptxas statistics in the NVRTC log:\n{}",
                    out.log
                );
            }
            for s in stats {
                println!(
                    "sm_{arch} {:<14} {:<32} registers={:<3} spill_stores={}B spill_loads={}B stack={}B static_smem={}B",
                    m.name, s.kernel, s.registers, s.spill_stores, s.spill_loads, s.stack_frame, s.shared_bytes
                );
                if s.spill_stores > 0 || s.spill_loads > 0 {
                    spills.push(format!("sm_{arch} {}", s.kernel));
                }
            }
        }
    }
    if args.fail_on_spill && !spills.is_empty() {
        bail!("register spills in: {}", spills.join(", "));
    }
    Ok(())
}
