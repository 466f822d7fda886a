//! Device memory: one owned allocation per buffer, freed on drop by the runtime that made it.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Alignment of emulated allocations, like `cudaMalloc` (g++ emits aligned vector moves for float4).
pub const EMU_ALIGN: usize = 256;

/// A runtime's pool of device blocks: a `Driver` allocation goes back to it on drop. (A trait, so this
/// file does not depend on the runtime that implements it.)
pub(crate) trait BlockPool: Send + Sync {
    fn give(&self, dptr: u64, class: usize);
}

pub(crate) enum Allocation {
    /// Host memory standing in for device memory (emulated runtime).
    Host { ptr: *mut u8, layout: Layout },
    /// A block of the driver runtime's caching pool, returned to it on drop.
    Driver {
        dptr: u64,
        class: usize,
        pool: Arc<dyn BlockPool>,
    },
    /// No memory at all: an address handed out by the dry-run runtime, which only counts bytes.
    Virtual { addr: u64 },
}

// SAFETY: the allocation is plain memory owned by this value; all access goes through &/&mut of the
// owning DeviceBuffer, and the driver pool is itself Send + Sync.
unsafe impl Send for Allocation {}
unsafe impl Sync for Allocation {}

impl Allocation {
    /// Host allocation of `bytes` (at least 1), 256-byte aligned, every byte set to `fill`.
    pub(crate) fn host(bytes: usize, fill: u8) -> anyhow::Result<Allocation> {
        let layout = Layout::from_size_align(bytes.max(1), EMU_ALIGN)?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            anyhow::bail!("emulated device out of memory allocating {bytes} bytes");
        }
        // SAFETY: ptr is valid for layout.size() bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, layout.size()) };
        Ok(Allocation::Host { ptr, layout })
    }

    pub(crate) fn address(&self) -> u64 {
        match self {
            Allocation::Host { ptr, .. } => *ptr as u64,
            Allocation::Driver { dptr, .. } => *dptr,
            Allocation::Virtual { addr } => *addr,
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        match self {
            // SAFETY: allocated in `host` with this layout.
            Allocation::Host { ptr, layout } => unsafe { std::alloc::dealloc(*ptr, *layout) },
            // Reuse is safe without a sync: all work runs in order on the one (null) stream.
            Allocation::Driver { dptr, class, pool } => pool.give(*dptr, *class),
            Allocation::Virtual { .. } => {}
        }
    }
}

/// Bytes held by one device's live buffers, and the most ever held at once.
#[derive(Debug, Default)]
pub struct MemStats {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemStats {
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    /// Starts a new peak measurement from what is live now.
    pub fn reset_peak(&self) {
        self.peak.store(self.live_bytes(), Ordering::Relaxed);
    }
}

/// One buffer's share of its device's [`MemStats`], given back on drop.
pub(crate) struct MemTicket {
    bytes: usize,
    stats: Arc<MemStats>,
}

impl MemTicket {
    /// Counts `bytes` (the allocation's real footprint: size class or aligned size) as live.
    pub(crate) fn new(stats: &Arc<MemStats>, bytes: usize) -> MemTicket {
        let live = stats.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        stats.peak.fetch_max(live, Ordering::Relaxed);
        MemTicket {
            bytes,
            stats: stats.clone(),
        }
    }
}

impl Drop for MemTicket {
    fn drop(&mut self) {
        self.stats.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// `len` elements of `T` in device memory (emulated: host memory at the same address).
pub struct DeviceBuffer<T> {
    alloc: Allocation,
    len: usize,
    _ticket: MemTicket,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> DeviceBuffer<T> {
    pub(crate) fn from_allocation(alloc: Allocation, len: usize, ticket: MemTicket) -> Self {
        DeviceBuffer {
            alloc,
            len,
            _ticket: ticket,
            _t: PhantomData,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    /// The device address (a host address for emulated buffers), as passed to kernels.
    pub fn device_ptr(&self) -> u64 {
        self.alloc.address()
    }
    /// Address of element `offset` (for kernels working on a sub-range); errors when out of range.
    pub fn device_ptr_at(&self, offset: usize) -> anyhow::Result<u64> {
        anyhow::ensure!(
            offset <= self.len,
            "offset {offset} beyond buffer of {} elements",
            self.len
        );
        Ok(self.device_ptr() + (offset * std::mem::size_of::<T>()) as u64)
    }
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.alloc, Allocation::Host { .. })
    }
    /// Emulated buffers only: the memory as a host slice.
    pub(crate) fn host_slice(&self) -> Option<&[T]> {
        match &self.alloc {
            // SAFETY: len elements were allocated and initialised (bytes set on allocation).
            Allocation::Host { ptr, .. } => {
                Some(unsafe { std::slice::from_raw_parts(*ptr as *const T, self.len) })
            }
            Allocation::Driver { .. } | Allocation::Virtual { .. } => None,
        }
    }
    pub(crate) fn host_slice_mut(&mut self) -> Option<&mut [T]> {
        match &self.alloc {
            // SAFETY: as above, and &mut self guarantees exclusive access.
            Allocation::Host { ptr, .. } => {
                Some(unsafe { std::slice::from_raw_parts_mut(*ptr as *mut T, self.len) })
            }
            Allocation::Driver { .. } | Allocation::Virtual { .. } => None,
        }
    }
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer<{}>[{}] @ {:#x}",
            std::any::type_name::<T>(),
            self.len,
            self.alloc.address()
        )
    }
}
