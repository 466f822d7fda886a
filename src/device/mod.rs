//! Devices: CPU, and CUDA with two runtimes (real driver through cudarc, host emulator).
//!
//! The launch path is shared: a launcher computes one [`LaunchConfig`] and one [`KernelArgs`]
//! (`cuLaunchKernel`'s `void**` array) and [`CudaDevice::launch`] hands them to the driver or to the
//! emulator, so every launcher is exercised without a GPU.

pub mod buffer;
pub mod cost;
pub mod cuda;
pub mod driver;
pub mod emulated;
pub mod kernel;
pub mod nvrtc;
pub mod profile;
pub mod registry;
pub mod roofline;

use anyhow::{bail, Result};

pub use buffer::{DeviceBuffer, MemStats};
pub use cuda::CudaDevice;
pub use emulated::Schedule;
pub use kernel::{ArgDesc, EmuDim3, EmuFn, Kernel, KernelArgs, LaunchConfig, ModuleImages};
pub use profile::LaunchRecord;

/// Where a computation runs.
#[derive(Clone, Debug)]
pub enum Device {
    /// The plain-Rust CPU ops (the oracle).
    Cpu,
    /// CUDA kernels, on a GPU or on the host emulator.
    Cuda(CudaDevice),
}

impl Device {
    /// `cpu`, `cuda` (GPU 0), `cuda:N`, `emu` (host emulator), `auto` (a usable GPU, else the CPU).
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(CudaDevice::driver(0)?)),
            "emu" => Ok(Device::Cuda(CudaDevice::emulated()?)),
            "auto" => Ok(CudaDevice::driver(0)
                .map(Device::Cuda)
                .unwrap_or(Device::Cpu)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Device::Cuda(CudaDevice::driver(n)?)),
                None => bail!("unknown device {s:?}: expected cpu, cuda, cuda:N, emu or auto"),
            },
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    pub fn cuda(&self) -> Option<&CudaDevice> {
        match self {
            Device::Cuda(d) => Some(d),
            Device::Cpu => None,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => f.write_str(&d.name()),
        }
    }
}
