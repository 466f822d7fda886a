//! The CUDA device: one launcher in front of two runtimes, the real driver and the host emulator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};

use super::buffer::{Allocation, DeviceBuffer, MemStats, MemTicket, EMU_ALIGN};
use super::driver::DriverRuntime;
use super::emulated::{EmuRuntime, Schedule};
use super::kernel::{Kernel, KernelArgs, LaunchConfig};
use super::profile::{LaunchRecord, Profiler};

enum Runtime {
    Driver(DriverRuntime),
    Emulated(EmuRuntime),
    /// Allocations are counted but own no memory; launches are validated and skipped. Measures the
    /// peak memory of a full-size step in seconds, through the same code path as a real run.
    DryRun {
        next_addr: AtomicU64,
    },
}

/// A CUDA device; cheap to clone (shared runtime).
#[derive(Clone)]
pub struct CudaDevice {
    rt: Arc<Runtime>,
    mem: Arc<MemStats>,
    prof: Arc<Profiler>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl CudaDevice {
    /// GPU `ordinal` through the driver; a clear error (never a panic) without driver or GPU.
    pub fn driver(ordinal: usize) -> Result<CudaDevice> {
        Ok(CudaDevice {
            rt: Arc::new(Runtime::Driver(DriverRuntime::new(ordinal)?)),
            mem: Arc::default(),
            prof: Arc::default(),
        })
    }

    /// The host emulator, scheduling order from `CULTUREMERT_EMU_SCHEDULE` (default forward).
    pub fn emulated() -> Result<CudaDevice> {
        Ok(CudaDevice::emulated_with(Schedule::from_env()?))
    }

    pub fn emulated_with(schedule: Schedule) -> CudaDevice {
        CudaDevice {
            rt: Arc::new(Runtime::Emulated(EmuRuntime { schedule })),
            mem: Arc::default(),
            prof: Arc::default(),
        }
    }

    /// A device that runs nothing: buffers are counted (256-byte aligned, like the emulator) but own
    /// no memory, kernels are validated but not run, and copies back read zeros. For memory plans.
    pub fn dry_run() -> CudaDevice {
        CudaDevice {
            rt: Arc::new(Runtime::DryRun {
                next_addr: AtomicU64::new(1 << 40),
            }),
            mem: Arc::default(),
            prof: Arc::default(),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(*self.rt, Runtime::DryRun { .. })
    }

    /// Bytes held by this device's live buffers now and at their peak (driver: pool size classes).
    pub fn memory(&self) -> &MemStats {
        &self.mem
    }

    pub fn is_emulated(&self) -> bool {
        matches!(*self.rt, Runtime::Emulated(_))
    }

    pub fn name(&self) -> String {
        match &*self.rt {
            Runtime::Driver(d) => format!("cuda ({}, sm_{})", d.name, d.arch),
            Runtime::Emulated(e) => format!("emu ({:?} schedule)", e.schedule),
            Runtime::DryRun { .. } => "dry run (allocations counted, kernels not run)".into(),
        }
    }

    /// Compute capability as major*10+minor; None for the emulator.
    pub fn arch(&self) -> Option<u32> {
        match &*self.rt {
            Runtime::Driver(d) => Some(d.arch),
            Runtime::Emulated(_) | Runtime::DryRun { .. } => None,
        }
    }

    fn alloc_filled<T: bytemuck::Pod>(&self, len: usize, zero: bool) -> Result<DeviceBuffer<T>> {
        let bytes = len * std::mem::size_of::<T>();
        let aligned = bytes.max(1).next_multiple_of(EMU_ALIGN);
        match &*self.rt {
            Runtime::Driver(d) => d.alloc(len, zero, &self.mem),
            // Uninitialised emulated memory is 0xFF bytes (NaN as f32), so reads of it show.
            Runtime::Emulated(_) => Ok(DeviceBuffer::from_allocation(
                Allocation::host(bytes, if zero { 0 } else { 0xff })?,
                len,
                MemTicket::new(&self.mem, aligned),
            )),
            Runtime::DryRun { next_addr } => Ok(DeviceBuffer::from_allocation(
                Allocation::Virtual {
                    addr: next_addr.fetch_add(aligned as u64, Ordering::Relaxed),
                },
                len,
                MemTicket::new(&self.mem, aligned),
            )),
        }
    }

    /// `len` elements, contents unspecified (poisoned with 0xFF bytes on the emulator).
    pub fn alloc<T: bytemuck::Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.alloc_filled(len, false)
    }

    pub fn alloc_zeros<T: bytemuck::Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.alloc_filled(len, true)
    }

    /// A new buffer holding a copy of `src`.
    pub fn htod<T: bytemuck::Pod>(&self, src: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(src.len())?;
        self.copy_htod(src, &mut b)?;
        Ok(b)
    }

    pub fn copy_htod<T: bytemuck::Pod>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        ensure!(
            src.len() == dst.len(),
            "copy of {} elements into a buffer of {}",
            src.len(),
            dst.len()
        );
        self.check_owner(dst)?;
        match &*self.rt {
            Runtime::Driver(d) => d.htod(src, dst),
            Runtime::DryRun { .. } => Ok(()),
            Runtime::Emulated(_) => {
                dst.host_slice_mut()
                    .expect("emulated buffer")
                    .copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Copies the whole buffer back (synchronises first).
    pub fn dtoh<T: bytemuck::Pod>(&self, src: &DeviceBuffer<T>) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); src.len()];
        self.copy_dtoh(src, &mut v)?;
        Ok(v)
    }

    pub fn copy_dtoh<T: bytemuck::Pod>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        ensure!(
            src.len() == dst.len(),
            "copy of {} elements into a slice of {}",
            src.len(),
            dst.len()
        );
        self.check_owner(src)?;
        match &*self.rt {
            Runtime::Driver(d) => d.dtoh(src, dst),
            Runtime::DryRun { .. } => {
                dst.fill(T::zeroed());
                Ok(())
            }
            Runtime::Emulated(_) => {
                dst.copy_from_slice(src.host_slice().expect("emulated buffer"));
                Ok(())
            }
        }
    }

    /// Waits for every launched kernel (a no-op on the emulator, whose launches are synchronous).
    pub fn synchronize(&self) -> Result<()> {
        match &*self.rt {
            Runtime::Driver(d) => d.synchronize(),
            Runtime::Emulated(_) | Runtime::DryRun { .. } => Ok(()),
        }
    }

    /// Launches `kernel` with one configuration and argument array for either runtime.
    pub fn launch(&self, kernel: &Kernel, cfg: LaunchConfig, args: KernelArgs<'_>) -> Result<()> {
        cfg.validate(kernel)?;
        if self.prof.enabled() {
            return self.launch_profiled(kernel, cfg, args);
        }
        self.launch_now(kernel, &cfg, &args)
    }

    fn launch_now(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &KernelArgs<'_>) -> Result<()> {
        match &*self.rt {
            Runtime::Driver(d) => d.launch(kernel, cfg, args),
            Runtime::Emulated(e) => e.launch(kernel, cfg, args),
            Runtime::DryRun { .. } => Ok(()),
        }
    }

    /// As `launch`, recording the launch (and its GPU time between two events on the driver).
    fn launch_profiled(
        &self,
        kernel: &Kernel,
        cfg: LaunchConfig,
        args: KernelArgs<'_>,
    ) -> Result<()> {
        let rec = LaunchRecord {
            kernel: kernel.name,
            grid: cfg.grid,
            block: cfg.block,
            args: args.describe().to_vec(),
            indirect_bytes: args.indirect(),
            gpu_ms: None,
        };
        let events = match &*self.rt {
            Runtime::Driver(d) => {
                let ev = d.event_pair()?;
                d.record_event(ev.start)?;
                d.launch(kernel, &cfg, &args)?;
                d.record_event(ev.end)?;
                Some(ev)
            }
            _ => {
                self.launch_now(kernel, &cfg, &args)?;
                None
            }
        };
        self.prof.push(rec, events);
        Ok(())
    }

    /// Starts recording every launch of this device (and its clones), dropping earlier records.
    pub fn start_profile(&self) {
        self.prof.start();
    }

    /// Synchronises, stops recording and returns the launches since `start_profile` in order (with
    /// GPU times from CUDA events on the driver).
    pub fn finish_profile(&self) -> Result<Vec<LaunchRecord>> {
        self.synchronize()?;
        self.prof.finish()
    }

    fn check_owner<T: bytemuck::Pod>(&self, b: &DeviceBuffer<T>) -> Result<()> {
        ensure!(
            b.is_host() == self.is_emulated(),
            "buffer {b:?} belongs to another CUDA runtime"
        );
        Ok(())
    }
}
