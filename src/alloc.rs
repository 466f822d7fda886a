//! `RecyclingAlloc`: the binary's global allocator. Large blocks (>= 1 MiB) that are freed are kept
//! (up to 1 GiB in all) and handed back to the next request of exactly the same size and alignment;
//! everything else goes straight to the system allocator.
//!
//! Why: the tape allocates every activation and gradient afresh, each step the same sizes. glibc
//! returns large blocks to the kernel on free (munmap), so the next allocation faults in fresh zeroed
//! pages again: ~180k page faults per MERT-95M forward + backward of a 5 s clip, at several
//! microseconds each in a VM. A recycled block is already mapped; `alloc_zeroed` clears it with a
//! memset, ~30x cheaper than faulting the pages in.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks below this go to the system allocator directly.
const MIN_CACHED: usize = 1 << 20;
/// Bytes kept at most; beyond, the oldest cached blocks are freed first.
const MAX_CACHED_BYTES: usize = 1 << 30;
const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Slot {
    ptr: usize, // 0: empty
    size: usize,
    align: usize,
    age: u64,
}

struct Cache {
    slots: [Slot; SLOTS],
    bytes: usize,
    clock: u64,
}

pub struct RecyclingAlloc {
    lock: AtomicBool,
    cache: std::cell::UnsafeCell<Cache>,
}

// SAFETY: `cache` is only touched while `lock` is held.
unsafe impl Sync for RecyclingAlloc {}

impl RecyclingAlloc {
    pub const fn new() -> Self {
        const EMPTY: Slot = Slot {
            ptr: 0,
            size: 0,
            align: 0,
            age: 0,
        };
        RecyclingAlloc {
            lock: AtomicBool::new(false),
            cache: std::cell::UnsafeCell::new(Cache {
                slots: [EMPTY; SLOTS],
                bytes: 0,
                clock: 0,
            }),
        }
    }

    /// Runs `f` on the cache under the spin lock (held for a scan of 64 slots at most).
    fn with_cache<R>(&self, f: impl FnOnce(&mut Cache) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to the cache.
        let r = f(unsafe { &mut *self.cache.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// A cached block of exactly this layout, taken out of the cache.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        self.with_cache(|c| {
            let slot = c
                .slots
                .iter_mut()
                .find(|s| s.ptr != 0 && s.size == layout.size() && s.align == layout.align())?;
            let ptr = slot.ptr as *mut u8;
            slot.ptr = 0;
            c.bytes -= layout.size();
            Some(ptr)
        })
    }

    /// Keeps the block; returns the blocks evicted to make room (the block itself if it cannot be
    /// kept), which the caller frees outside the lock.
    fn keep(&self, ptr: *mut u8, layout: Layout) -> [Option<Slot>; SLOTS + 1] {
        let mut freed = [None; SLOTS + 1];
        self.with_cache(|c| {
            let mut n = 0;
            if layout.size() > MAX_CACHED_BYTES {
                freed[0] = Some(slot_of(ptr, layout, 0));
                return;
            }
            // Evict the oldest blocks until the new one fits in bytes and in slots.
            while c.bytes + layout.size() > MAX_CACHED_BYTES || c.slots.iter().all(|s| s.ptr != 0) {
                let oldest = c
                    .slots
                    .iter_mut()
                    .filter(|s| s.ptr != 0)
                    .min_by_key(|s| s.age)
                    .expect("the cache holds bytes, so it holds a block");
                freed[n] = Some(*oldest);
                n += 1;
                c.bytes -= oldest.size;
                oldest.ptr = 0;
            }
            c.clock += 1;
            let free = c.slots.iter_mut().find(|s| s.ptr == 0).expect("made room");
            *free = slot_of(ptr, layout, c.clock);
            c.bytes += layout.size();
        });
        freed
    }
}

impl Default for RecyclingAlloc {
    fn default() -> Self {
        Self::new()
    }
}

fn slot_of(ptr: *mut u8, layout: Layout, age: u64) -> Slot {
    Slot {
        ptr: ptr as usize,
        size: layout.size(),
        align: layout.align(),
        age,
    }
}

unsafe impl GlobalAlloc for RecyclingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_CACHED {
            if let Some(p) = self.take(layout) {
                return p;
            }
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_CACHED {
            if let Some(p) = self.take(layout) {
                std::ptr::write_bytes(p, 0, layout.size());
                return p;
            }
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_CACHED && new_size < MIN_CACHED {
            return System.realloc(ptr, layout, new_size);
        }
        // Through the cache: a new block of the new size, the contents copied, the old one kept.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < MIN_CACHED {
            return System.dealloc(ptr, layout);
        }
        for s in self.keep(ptr, layout).into_iter().flatten() {
            let l = Layout::from_size_align_unchecked(s.size, s.align);
            System.dealloc(s.ptr as *mut u8, l);
        }
    }
}
