//! Device selection (`--device cpu|cuda|emu|auto`) and the driver gate: on a machine without a CUDA
//! driver, asking for CUDA is a clear error (never a panic) and `auto` falls back to the CPU.

use culturemert_raw::device::{CudaDevice, Device, Schedule};

fn driver_present() -> bool {
    // SAFETY: only probes for libcuda with dlopen.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[test]
fn parse_devices() {
    assert!(matches!(Device::parse("cpu").unwrap(), Device::Cpu));
    let emu = Device::parse("emu").unwrap();
    assert!(emu.cuda().is_some_and(|d| d.is_emulated()), "{emu}");
    let e = Device::parse("tpu").unwrap_err().to_string();
    assert!(e.contains("cpu, cuda, cuda:N, emu or auto"), "{e}");
    assert!(Device::parse("cuda:x").is_err());
}

#[test]
fn cuda_without_driver_is_an_error_and_auto_falls_back() {
    let auto = Device::parse("auto").unwrap();
    match CudaDevice::driver(0) {
        Ok(d) => {
            println!("GPU present: {}", d.name());
            assert!(auto.is_cuda());
        }
        Err(e) => {
            let msg = format!("{e:#}");
            println!("no GPU: {msg}");
            if !driver_present() {
                assert!(msg.contains("no CUDA driver"), "{msg}");
            }
            assert!(matches!(auto, Device::Cpu), "{auto}");
            assert!(Device::parse("cuda").is_err());
        }
    }
}

#[test]
fn schedules_parse() {
    assert_eq!(Schedule::parse("reverse").unwrap(), Schedule::Reverse);
    assert_eq!(Schedule::parse("random:42").unwrap(), Schedule::Random(42));
    assert!(Schedule::parse("sideways").is_err());
}

#[test]
fn buffers_of_one_runtime_are_rejected_by_another() {
    // Two emulated devices share the host runtime, so copies between them are fine; the check
    // guards driver <-> emulator mix-ups, which can only be shown with a GPU present.
    let a = CudaDevice::emulated_with(Schedule::Forward);
    let b = CudaDevice::emulated_with(Schedule::Reverse);
    let buf = a.htod(&[1.0f32, 2.0]).unwrap();
    assert_eq!(b.dtoh(&buf).unwrap(), [1.0, 2.0]);
    let mut short = a.alloc::<f32>(1).unwrap();
    assert!(
        a.copy_htod(&[1.0, 2.0], &mut short).is_err(),
        "length mismatch is an error"
    );
}

#[test]
fn driver_and_emulator_buffers_do_not_mix_when_a_gpu_is_present() {
    let Ok(gpu) = CudaDevice::driver(0) else {
        println!("no GPU: nothing to mix");
        return;
    };
    let emu = CudaDevice::emulated_with(Schedule::Forward);
    let on_gpu = gpu.htod(&[1.0f32, 2.0]).unwrap();
    let on_emu = emu.htod(&[1.0f32, 2.0]).unwrap();
    assert!(emu.dtoh(&on_gpu).is_err());
    assert!(gpu.dtoh(&on_emu).is_err());
    assert_eq!(gpu.dtoh(&on_gpu).unwrap(), [1.0, 2.0]);
}
