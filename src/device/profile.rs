//! Launch profile: while enabled, every launch through [`super::CudaDevice::launch`] is recorded
//! (kernel, grid, block, argument descriptions) and, on the driver, bracketed by two CUDA events so
//! its GPU time can be read once the stream is idle. Off by default: then it costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use cudarc::driver::sys;

use super::kernel::ArgDesc;

/// One recorded launch.
#[derive(Clone, Debug)]
pub struct LaunchRecord {
    pub kernel: &'static str,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub args: Vec<ArgDesc>,
    /// Bytes moved through pointer tables (see `KernelArgs::indirect_bytes`).
    pub indirect_bytes: u64,
    /// GPU time from CUDA events (driver only, after [`Profiler::finish`]).
    pub gpu_ms: Option<f64>,
}

impl LaunchRecord {
    pub fn blocks(&self) -> u64 {
        self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64
    }
}

/// Two events around one driver launch, resolved after synchronisation.
pub(crate) struct EventPair {
    pub start: sys::CUevent,
    pub end: sys::CUevent,
}

// SAFETY: CUevent handles are plain driver handles, usable from any thread of the context.
unsafe impl Send for EventPair {}

impl EventPair {
    pub fn new() -> Result<EventPair> {
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let create = || cudarc::driver::result::event::create(flags).map_err(|e| anyhow!("{e:?}"));
        Ok(EventPair {
            start: create()?,
            end: create()?,
        })
    }

    fn elapsed_ms(&self) -> Result<f64> {
        // SAFETY: both events were created by `new`, recorded on the same stream, not destroyed.
        unsafe { cudarc::driver::result::event::elapsed(self.start, self.end) }
            .map(f64::from)
            .map_err(|e| anyhow!("cuEventElapsedTime: {e:?}"))
    }
}

impl Drop for EventPair {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        unsafe {
            let _ = cudarc::driver::result::event::destroy(self.start);
            let _ = cudarc::driver::result::event::destroy(self.end);
        }
    }
}

#[derive(Default)]
pub struct Profiler {
    enabled: AtomicBool,
    records: Mutex<Vec<(LaunchRecord, Option<EventPair>)>>,
}

impl Profiler {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Drops earlier records and starts recording.
    pub fn start(&self) {
        self.records.lock().unwrap().clear();
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn push(&self, rec: LaunchRecord, events: Option<EventPair>) {
        self.records.lock().unwrap().push((rec, events));
    }

    /// Stops recording and returns the launches in order, with GPU times where events were taken.
    /// The caller synchronises the device first.
    pub fn finish(&self) -> Result<Vec<LaunchRecord>> {
        self.enabled.store(false, Ordering::Relaxed);
        let taken = std::mem::take(&mut *self.records.lock().unwrap());
        taken
            .into_iter()
            .map(|(mut rec, ev)| {
                if let Some(ev) = ev {
                    rec.gpu_ms = Some(ev.elapsed_ms()?);
                }
                Ok(rec)
            })
            .collect()
    }
}
