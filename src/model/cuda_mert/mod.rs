//! MERT forward and backward on a CUDA device (a GPU, the host emulator, or the dry-run device that only
//! counts memory), written out llm.c style: `forward` runs the kernels in order and keeps exactly the
//! activations backward needs, `backward` walks them in reverse and frees each as soon as it is used.
//! Semantics are those of [`crate::model::mert::Mert::forward`] on the tape (same dropout seeds, same
//! LayerDrop draws, same padding rules), so the CPU backend is the oracle for every tensor here.

mod backward;
mod conv_stack;
mod forward;
mod layer;
mod positional;

pub use forward::CudaForward;

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};

use super::config::MertConfig;
use super::mert::Mert;
use crate::autograd::ParamStore;
use crate::cuda::layout;
use crate::cuda::tensor_core::HalfKind;
use crate::device::{CudaDevice, DeviceBuffer};
use crate::tensor::Tensor;

pub(crate) type Buf = DeviceBuffer<f32>;

/// The model's parameters on the device, in `ParamStore` order, with one f32 gradient buffer per
/// trainable parameter (None for frozen ones: backward computes nothing that only they need).
pub struct CudaParams {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    pub values: Vec<Buf>,
    pub grads: Vec<Option<Buf>>,
}

impl CudaParams {
    /// Copies every parameter to `dev` as f32; gradients start at zero. Frozen flags come from `store`.
    pub fn upload(dev: &CudaDevice, store: &ParamStore) -> Result<CudaParams> {
        let mut p = CudaParams {
            names: Vec::new(),
            shapes: Vec::new(),
            index: HashMap::new(),
            values: Vec::new(),
            grads: Vec::new(),
        };
        for param in store.iter() {
            let value = param.value.to_f32();
            let buf = dev
                .htod(value.data())
                .with_context(|| format!("uploading {}", param.name))?;
            let grad = if param.frozen {
                None
            } else {
                Some(dev.alloc_zeros::<f32>(buf.len())?)
            };
            p.index.insert(param.name.clone(), p.names.len());
            p.names.push(param.name.clone());
            p.shapes.push(value.shape().to_vec());
            p.values.push(buf);
            p.grads.push(grad);
        }
        Ok(p)
    }

    pub fn id(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .with_context(|| format!("parameter {name} missing on the device"))
    }

    pub fn id_opt(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Ids of nn.Linear `name` (weight [out, in], optional bias) and its (in, out) features.
    pub fn linear_ids(&self, name: &str) -> Result<(usize, Option<usize>, usize, usize)> {
        let w = self.id(&format!("{name}.weight"))?;
        let shape = &self.shapes[w];
        ensure!(
            shape.len() == 2,
            "{name}.weight has shape {shape:?}, expected [out, in]"
        );
        Ok((w, self.id_opt(&format!("{name}.bias")), shape[1], shape[0]))
    }

    pub fn is_trainable(&self, id: usize) -> bool {
        self.grads[id].is_some()
    }

    /// The value of `w` with the gradient buffers of `w` and `b` (None when frozen), borrowed together.
    pub(crate) fn value_and_grads(
        &mut self,
        w: usize,
        b: Option<usize>,
    ) -> (&Buf, Option<&mut Buf>, Option<&mut Buf>) {
        let CudaParams { values, grads, .. } = self;
        match b {
            None => (&values[w], grads[w].as_mut(), None),
            Some(b) => {
                let [gw, gb] = grads
                    .get_disjoint_mut([w, b])
                    .expect("parameter ids in range and distinct");
                (&values[w], gw.as_mut(), gb.as_mut())
            }
        }
    }

    /// Sets every gradient to zero (start of an accumulation window).
    pub fn zero_grads(&mut self, dev: &CudaDevice) -> Result<()> {
        for g in self.grads.iter_mut().flatten() {
            layout::fill(dev, g, 0.0)?;
        }
        Ok(())
    }

    /// Writes the device values back into `store` (as f32), by name.
    pub fn download_values(&self, dev: &CudaDevice, store: &mut ParamStore) -> Result<()> {
        for (i, name) in self.names.iter().enumerate() {
            let id = store
                .id(name)
                .with_context(|| format!("parameter {name} missing on the host"))?;
            let data = dev.dtoh(&self.values[i])?;
            store.get_mut(id).value = Tensor::from_f32(&self.shapes[i], data);
        }
        Ok(())
    }

    /// Every trainable parameter's gradient copied to the host, by name (frozen ones are absent).
    pub fn download_grads(&self, dev: &CudaDevice) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        for (i, g) in self.grads.iter().enumerate() {
            if let Some(g) = g {
                out.push((self.names[i].clone(), dev.dtoh(g)?));
            }
        }
        Ok(out)
    }
}

/// Arithmetic of the linear layers (q/k/v/out projections, FFN, feature projection, heads). Everything
/// else (conv stack, norms, attention, losses, optimiser, master weights, gradients) stays f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 operands on tensor cores, f32 accumulation.
    Bf16,
    /// f16 operands on tensor cores, f32 accumulation (train with loss scaling).
    F16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => bail!("unknown precision {s:?}: expected f32, bf16 or f16"),
        }
    }

    pub fn half(self) -> Option<HalfKind> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(HalfKind::Bf16),
            Precision::F16 => Some(HalfKind::F16),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// A MERT model resident on a CUDA device.
pub struct CudaMert {
    pub config: MertConfig,
    pub dev: CudaDevice,
    pub params: CudaParams,
    pub precision: Precision,
}

impl CudaMert {
    /// Uploads `model` (values and frozen flags) to `dev`.
    pub fn new(dev: &CudaDevice, model: &Mert) -> Result<CudaMert> {
        model.config.validate()?;
        ensure!(
            model.config.head_dim() <= 64,
            "the CUDA attention kernel supports head_dim <= 64, config has {}",
            model.config.head_dim()
        );
        Ok(CudaMert {
            config: model.config.clone(),
            dev: dev.clone(),
            params: CudaParams::upload(dev, &model.params)?,
            precision: Precision::F32,
        })
    }
}
