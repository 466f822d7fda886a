//! The host-emulator runtime: kernels compiled by g++ with `kernels/emu/shim.h`, run block by block
//! with one fiber per CUDA thread (`kernels/emu/runtime.cpp`).

use std::ffi::{c_char, CStr};

use anyhow::{anyhow, Result};

use super::kernel::{EmuDim3, Kernel, KernelArgs, LaunchConfig};

extern "C" {
    fn emu_last_error() -> *const c_char;
    fn emu_set_schedule(mode: i32, seed: u64);
    fn emu_shared_section_bytes() -> u64;
}

/// Order in which the scheduler runs the runnable threads of a block between barriers. Running the
/// kernel tests under two orders catches missing `__syncthreads` that one order hides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A fresh seeded permutation at every scheduling pass.
    Random(u64),
}

impl Schedule {
    /// `forward`, `reverse`, `random` or `random:SEED`.
    pub fn parse(s: &str) -> Result<Schedule> {
        match s {
            "forward" => Ok(Schedule::Forward),
            "reverse" => Ok(Schedule::Reverse),
            "random" => Ok(Schedule::Random(1)),
            _ => s
                .strip_prefix("random:")
                .and_then(|n| n.parse().ok())
                .map(Schedule::Random)
                .ok_or_else(|| {
                    anyhow!("unknown emulator schedule {s:?} (forward, reverse, random[:SEED])")
                }),
        }
    }

    /// `CULTUREMERT_EMU_SCHEDULE`, default forward.
    pub fn from_env() -> Result<Schedule> {
        match std::env::var("CULTUREMERT_EMU_SCHEDULE") {
            Ok(s) if !s.is_empty() => Schedule::parse(&s),
            _ => Ok(Schedule::Forward),
        }
    }
}

pub struct EmuRuntime {
    pub schedule: Schedule,
}

impl EmuRuntime {
    pub fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &KernelArgs<'_>) -> Result<()> {
        let (_slots, mut params) = args.param_array();
        let dim = |d: (u32, u32, u32)| EmuDim3 {
            x: d.0,
            y: d.1,
            z: d.2,
        };
        let (mode, seed) = match self.schedule {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Random(s) => (2, s),
        };
        // SAFETY: the schedule is a thread-local of the runtime; the launch reads `params` exactly as
        // the kernel's signature says, and KernelArgs' lifetime keeps the buffers alive.
        let rc = unsafe {
            emu_set_schedule(mode, seed);
            (kernel.emu)(
                dim(cfg.grid),
                dim(cfg.block),
                cfg.shared_bytes,
                params.as_mut_ptr(),
            )
        };
        if rc != 0 {
            // SAFETY: a NUL-terminated thread-local string of the runtime, copied at once.
            let msg = unsafe { CStr::from_ptr(emu_last_error()) }
                .to_string_lossy()
                .into_owned();
            return Err(anyhow!("emulated launch failed: {msg}"));
        }
        Ok(())
    }
}

/// Bytes of static `__shared__` storage over all emulated kernels (the poisoned section).
pub fn static_shared_section_bytes() -> u64 {
    // SAFETY: reads two linker symbols.
    unsafe { emu_shared_section_bytes() }
}
