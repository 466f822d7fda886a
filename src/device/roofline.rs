//! Peak rates of the GPUs the roofline is drawn for (datasheet figures, dense: without 2:4 sparsity)
//! and the roofline bound of a launch: max(FLOPs / peak of its unit, bytes / memory bandwidth).

use anyhow::{bail, Result};

use super::cost::{Cost, Unit};

#[derive(Clone, Debug, PartialEq)]
pub struct Peaks {
    pub name: String,
    /// bf16 / f16 tensor cores, f32 accumulation, dense (FLOP/s).
    pub tensor_half: f64,
    /// f32 on the CUDA cores (FLOP/s).
    pub f32: f64,
    /// DRAM bandwidth (B/s).
    pub bandwidth: f64,
    pub sms: u32,
}

const T: f64 = 1e12;

/// NVIDIA datasheets: H100 SXM5 and H200 SXM (same GH100 compute, HBM3 3.35 TB/s vs HBM3e 4.8 TB/s),
/// A100 SXM4 80 GB.
pub fn builtin() -> Vec<Peaks> {
    let p = |name: &str, tensor_half: f64, f32: f64, bandwidth: f64, sms: u32| Peaks {
        name: name.into(),
        tensor_half: tensor_half * T,
        f32: f32 * T,
        bandwidth: bandwidth * T,
        sms,
    };
    vec![
        p("H100 SXM", 989.4, 66.9, 3.35, 132),
        p("H200", 989.4, 66.9, 4.8, 132),
        p("A100", 312.0, 19.5, 2.039, 108),
    ]
}

impl Peaks {
    /// A built-in GPU by name (`h100`, `h200`, `a100`; case and spaces ignored), or by a device name
    /// that contains one (`NVIDIA H200`, `NVIDIA H100 80GB HBM3`).
    pub fn lookup(name: &str) -> Result<Peaks> {
        let key = name.to_ascii_lowercase().replace([' ', '-', '_'], "");
        for p in builtin() {
            let short = p.name.to_ascii_lowercase().replace(' ', "");
            let chip = &short[..4];
            if key == short || key == chip || key.contains(chip) {
                return Ok(p);
            }
        }
        bail!("no built-in peaks for GPU {name:?}: use h100, h200 or a100, or give --peak-bf16, --peak-f32 and --bandwidth")
    }

    /// Replaces the figures that are given (TFLOP/s, TFLOP/s, TB/s, SMs).
    pub fn with_overrides(
        mut self,
        tensor_half_tflops: Option<f64>,
        f32_tflops: Option<f64>,
        bandwidth_tbs: Option<f64>,
        sms: Option<u32>,
    ) -> Result<Peaks> {
        for (what, v) in [
            ("--peak-bf16", tensor_half_tflops),
            ("--peak-f32", f32_tflops),
            ("--bandwidth", bandwidth_tbs),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                bail!("{what} must be a positive number");
            }
        }
        let custom = [tensor_half_tflops, f32_tflops, bandwidth_tbs]
            .iter()
            .any(Option::is_some)
            || sms.is_some();
        self.tensor_half = tensor_half_tflops.map_or(self.tensor_half, |v| v * T);
        self.f32 = f32_tflops.map_or(self.f32, |v| v * T);
        self.bandwidth = bandwidth_tbs.map_or(self.bandwidth, |v| v * T);
        self.sms = sms.unwrap_or(self.sms).max(1);
        if custom {
            self.name = format!("{} (overridden)", self.name);
        }
        Ok(self)
    }

    pub fn peak(&self, unit: Unit) -> f64 {
        match unit {
            Unit::TensorHalf => self.tensor_half,
            Unit::F32 => self.f32,
        }
    }

    /// Seconds below which no kernel with this cost can run on this GPU.
    pub fn bound_s(&self, c: &Cost) -> f64 {
        (c.flops / self.peak(c.unit)).max(c.bytes / self.bandwidth)
    }

    /// True when the arithmetic, not the memory traffic, sets the bound.
    pub fn compute_bound(&self, c: &Cost) -> bool {
        c.flops / self.peak(c.unit) > c.bytes / self.bandwidth
    }
}
