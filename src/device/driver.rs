//! The real CUDA driver through cudarc (dynamic loading: nothing from CUDA is needed to build).
//! Modules come from the CUBIN/PTX embedded by build.rs, or from NVRTC at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::buffer::{Allocation, BlockPool, DeviceBuffer, MemStats, MemTicket};
use super::kernel::{Kernel, KernelArgs, LaunchConfig, ModuleImages};
use super::nvrtc::{Nvrtc, Target};
use super::profile::EventPair;

/// Caching allocator: freed blocks are kept per size class and reused; cuMemFree only when the
/// runtime goes away or an allocation fails.
pub(crate) struct DriverPool {
    ctx: Arc<CudaContext>,
    free: Mutex<HashMap<usize, Vec<u64>>>,
}

/// Power-of-two classes up to 64 MiB (>= 256 B), then whole MiB.
fn size_class(bytes: usize) -> usize {
    const MIB: usize = 1 << 20;
    if bytes <= 64 * MIB {
        bytes.next_power_of_two().max(256)
    } else {
        bytes.div_ceil(MIB) * MIB
    }
}

impl DriverPool {
    fn take(&self, bytes: usize) -> Result<(u64, usize)> {
        let class = size_class(bytes);
        if let Some(p) = self
            .free
            .lock()
            .unwrap()
            .get_mut(&class)
            .and_then(|v| v.pop())
        {
            return Ok((p, class));
        }
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e:?}"))?;
        // SAFETY: plain allocation in a bound context; returned to the pool by Allocation::drop.
        match unsafe { cudarc::driver::result::malloc_sync(class) } {
            Ok(p) => Ok((p, class)),
            Err(_) => {
                self.release_cached();
                // SAFETY: as above.
                let p = unsafe { cudarc::driver::result::malloc_sync(class) }
                    .map_err(|e| anyhow!("CUDA out of memory allocating {bytes} bytes: {e:?}"))?;
                Ok((p, class))
            }
        }
    }

    /// Frees every cached block (after the device is idle).
    fn release_cached(&self) {
        if self.ctx.bind_to_thread().is_err() || self.ctx.synchronize().is_err() {
            return;
        }
        for (_, blocks) in self.free.lock().unwrap().drain() {
            for p in blocks {
                // SAFETY: p came from malloc_sync, is not in use (it is in the free list), freed once.
                let _ = unsafe { cudarc::driver::result::free_sync(p) };
            }
        }
    }
}

impl BlockPool for DriverPool {
    fn give(&self, dptr: u64, class: usize) {
        self.free
            .lock()
            .unwrap()
            .entry(class)
            .or_default()
            .push(dptr);
    }
}

impl Drop for DriverPool {
    fn drop(&mut self) {
        self.release_cached();
    }
}

pub struct DriverRuntime {
    pub(crate) ctx: Arc<CudaContext>,
    pool: Arc<DriverPool>,
    stream: Arc<CudaStream>,
    /// Compute capability as major*10 + minor (e.g. 80, 90).
    pub arch: u32,
    pub name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl DriverRuntime {
    pub fn new(ordinal: usize) -> Result<DriverRuntime> {
        // SAFETY: probes for libcuda with dlopen only. Without it CudaContext::new would panic.
        if !unsafe { sys::is_culib_present() } {
            bail!("no CUDA driver (libcuda.so) on this machine: use --device cpu or emu");
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("CUDA device {ordinal}: {e:?}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| anyhow!("{e:?}"))?;
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let stream = ctx.default_stream();
        Ok(DriverRuntime {
            pool: Arc::new(DriverPool {
                ctx: ctx.clone(),
                free: Mutex::default(),
            }),
            ctx,
            stream,
            arch: (major * 10 + minor) as u32,
            name,
            modules: Mutex::default(),
            functions: Mutex::default(),
        })
    }

    /// The best image for this GPU: a CUBIN of the same major version and a minor <= ours, else the
    /// embedded PTX (driver JIT), else NVRTC now.
    fn module_image(&self, m: &ModuleImages) -> Result<Ptx> {
        let best = m
            .cubins
            .iter()
            .filter(|(sm, _)| sm / 10 == self.arch / 10 && *sm <= self.arch)
            .max_by_key(|(sm, _)| *sm);
        if let Some((_, cubin)) = best {
            return Ok(Ptx::from_binary(cubin.to_vec()));
        }
        if let (Some(ptx), true) = (m.ptx, m.ptx_arch <= self.arch) {
            return Ok(Ptx::from_src(ptx));
        }
        let nvrtc = Nvrtc::load_default().map_err(|e| anyhow!(e))?;
        let out = nvrtc
            .compile(
                &format!("{}.cu", m.name),
                m.source,
                crate::device::registry::HEADERS,
                Target::Ptx(self.arch),
                &[],
            )
            .map_err(|e| anyhow!(e))?;
        Ok(Ptx::from_src(String::from_utf8(out.image)?))
    }

    fn function(&self, k: &Kernel) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().unwrap().get(k.name) {
            return Ok(f.clone());
        }
        if !k.gpu {
            bail!("kernel {} is emulator-only", k.name);
        }
        let mut modules = self.modules.lock().unwrap();
        let module = match modules.get(k.module) {
            Some(m) => m.clone(),
            None => {
                let images = crate::device::registry::MODULES
                    .iter()
                    .find(|m| m.name == k.module)
                    .ok_or_else(|| anyhow!("no module {} for kernel {}", k.module, k.name))?;
                let m = self
                    .ctx
                    .load_module(self.module_image(images)?)
                    .map_err(|e| anyhow!("loading kernels/{}.cu: {e:?}", k.module))?;
                modules.insert(k.module, m.clone());
                m
            }
        };
        let f = module
            .load_function(k.name)
            .map_err(|e| anyhow!("kernel {}: {e:?}", k.name))?;
        self.functions.lock().unwrap().insert(k.name, f.clone());
        Ok(f)
    }

    pub fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &KernelArgs<'_>) -> Result<()> {
        let f = self.function(kernel)?;
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e:?}"))?;
        if cfg.large_shared {
            // SAFETY: f is a live function of a loaded module.
            unsafe {
                cudarc::driver::result::function::set_function_attribute(
                    f.cu_function(),
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_bytes as i32,
                )
            }
            .map_err(|e| anyhow!("kernel {}: shared memory opt-in: {e:?}", kernel.name))?;
        }
        let (_slots, mut params) = args.param_array();
        // SAFETY: params matches the kernel signature (built by its launcher); the buffers are
        // borrowed by `args` and the caller synchronises before they can be freed or read.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| anyhow!("launching {}: {e:?}", kernel.name))
    }

    /// Two timing events in this runtime's context (launch profiling).
    pub(crate) fn event_pair(&self) -> Result<EventPair> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e:?}"))?;
        EventPair::new()
    }

    /// Records `event` on this runtime's stream (launch profiling).
    pub(crate) fn record_event(&self, event: sys::CUevent) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e:?}"))?;
        // SAFETY: a live event created in this context, recorded on this context's stream.
        unsafe { cudarc::driver::result::event::record(event, self.stream.cu_stream()) }
            .map_err(|e| anyhow!("cuEventRecord: {e:?}"))
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("CUDA synchronize: {e:?}"))
    }

    pub fn alloc<T: bytemuck::Pod>(
        &self,
        len: usize,
        zero: bool,
        stats: &Arc<MemStats>,
    ) -> Result<DeviceBuffer<T>> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let (dptr, class) = self.pool.take(bytes)?;
        let ticket = MemTicket::new(stats, class);
        let alloc = Allocation::Driver {
            dptr,
            class,
            pool: self.pool.clone(),
        };
        if zero {
            // Stream-ordered, like the kernels that will use the memory.
            // SAFETY: dptr is valid for `bytes` bytes.
            unsafe {
                cudarc::driver::result::memset_d8_async(dptr, 0, bytes, self.stream.cu_stream())
            }
            .map_err(|e| anyhow!("cuMemsetD8Async: {e:?}"))?;
        }
        Ok(DeviceBuffer::from_allocation(alloc, len, ticket))
    }

    pub fn htod<T: bytemuck::Pod>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        self.synchronize()?;
        // SAFETY: dst holds at least src.len() elements (checked by the caller).
        unsafe { cudarc::driver::result::memcpy_htod_sync(dst.device_ptr(), src) }
            .map_err(|e| anyhow!("cuMemcpyHtoD: {e:?}"))
    }

    pub fn dtoh<T: bytemuck::Pod>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        self.synchronize()?;
        // SAFETY: src holds at least dst.len() elements (checked by the caller).
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(dst, src.device_ptr()) }
            .map_err(|e| anyhow!("cuMemcpyDtoH: {e:?}"))
    }
}
