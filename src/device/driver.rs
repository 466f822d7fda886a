//! The real CUDA driver through cudarc (dynamic loading: nothing from CUDA is needed to build).
//! Modules come from the CUBIN/PTX embedded by build.rs, or from NVRTC at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::buffer::{Allocation, DeviceBuffer};
use super::kernel::{Kernel, KernelArgs, LaunchConfig, ModuleImages};
use super::nvrtc::{Nvrtc, Target};

pub struct DriverRuntime {
    pub(crate) ctx: Arc<CudaContext>,
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
                crate::cuda::registry::HEADERS,
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
                let images = crate::cuda::registry::MODULES
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

    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("CUDA synchronize: {e:?}"))
    }

    pub fn alloc<T: bytemuck::Pod>(&self, len: usize, zero: bool) -> Result<DeviceBuffer<T>> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e:?}"))?;
        // SAFETY: plain allocation in a bound context; freed by Allocation::drop.
        let dptr = unsafe { cudarc::driver::result::malloc_sync(bytes) }
            .map_err(|e| anyhow!("cuMemAlloc of {bytes} bytes: {e:?}"))?;
        let alloc = Allocation::Driver {
            dptr,
            ctx: self.ctx.clone(),
        };
        if zero {
            // SAFETY: dptr is valid for `bytes` bytes.
            unsafe { cudarc::driver::result::memset_d8_sync(dptr, 0, bytes) }
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        Ok(DeviceBuffer::from_allocation(alloc, len))
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
