//! The tensor type: a shape, a dtype and shared storage on a device.
//!
//! Storage is reference-counted so the autograd tape can keep saved activations alive without copies.
//! Only the CPU storage computes today; the CUDA device (src/device) owns its own buffers and tensors move
//! between the two with explicit copies.

use anyhow::{bail, Result};
use half::{bf16, f16};
use std::sync::Arc;

/// Element types the engine stores. Compute is f32 on the CPU; f16/bf16 are storage and tensor-core types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    U16,
    U8,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::U16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    pub fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            DType::F32 => S::F32,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I32 => S::I32,
            DType::I64 => S::I64,
            DType::U16 => S::U16,
            DType::U8 => S::U8,
        }
    }

    pub fn from_safetensors(d: safetensors::Dtype) -> Result<Self> {
        use safetensors::Dtype as S;
        Ok(match d {
            S::F32 => DType::F32,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I32 => DType::I32,
            S::I64 => DType::I64,
            S::U16 => DType::U16,
            S::U8 => DType::U8,
            other => bail!("unsupported safetensors dtype {other:?}"),
        })
    }
}

/// Host-side typed data.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U16(Vec<u16>),
    U8(Vec<u8>),
}

impl CpuData {
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
            CpuData::BF16(_) => DType::BF16,
            CpuData::I32(_) => DType::I32,
            CpuData::I64(_) => DType::I64,
            CpuData::U16(_) => DType::U16,
            CpuData::U8(_) => DType::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
            CpuData::BF16(v) => v.len(),
            CpuData::I32(v) => v.len(),
            CpuData::I64(v) => v.len(),
            CpuData::U16(v) => v.len(),
            CpuData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode little-endian raw bytes (as in a safetensors file) of the given dtype.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<Self> {
        let size = dtype.size_in_bytes();
        if !bytes.len().is_multiple_of(size) {
            bail!(
                "{} bytes is not a whole number of {dtype:?} elements",
                bytes.len()
            );
        }
        let chunks = bytes.chunks_exact(size);
        Ok(match dtype {
            DType::F32 => CpuData::F32(
                chunks
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::F16 => CpuData::F16(
                chunks
                    .map(|c| f16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::BF16 => CpuData::BF16(
                chunks
                    .map(|c| bf16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::I32 => CpuData::I32(
                chunks
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::I64 => CpuData::I64(
                chunks
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::U16 => CpuData::U16(
                chunks
                    .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            DType::U8 => CpuData::U8(bytes.to_vec()),
        })
    }

    /// Little-endian raw bytes, as a safetensors file stores them.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            CpuData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuData::U8(v) => v.clone(),
        }
    }

    /// Values converted to f32 (floating types exactly; integers by `as`).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            CpuData::F32(v) => v.clone(),
            CpuData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            CpuData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            CpuData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            CpuData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            CpuData::U16(v) => v.iter().map(|&x| x as f32).collect(),
            CpuData::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// Where a tensor's storage lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    Cpu(CpuData),
}

/// A contiguous row-major tensor. Cloning is cheap (shared storage); mutation copies on write.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn new(shape: &[usize], data: CpuData) -> Result<Self> {
        if numel(shape) != data.len() {
            bail!(
                "shape {shape:?} needs {} elements, data has {}",
                numel(shape),
                data.len()
            );
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Cpu(data)),
        })
    }

    /// An f32 tensor; panics only on a programming error (length mismatch).
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Self {
        assert_eq!(
            numel(shape),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage::Cpu(CpuData::F32(data))),
        }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::from_f32(shape, vec![0.0; numel(shape)])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn dtype(&self) -> DType {
        match &*self.storage {
            Storage::Cpu(d) => d.dtype(),
        }
    }

    pub fn cpu_data(&self) -> &CpuData {
        match &*self.storage {
            Storage::Cpu(d) => d,
        }
    }

    /// The f32 values; an error for other dtypes.
    pub fn f32s(&self) -> Result<&[f32]> {
        match self.cpu_data() {
            CpuData::F32(v) => Ok(v),
            other => bail!("expected an f32 tensor, found {:?}", other.dtype()),
        }
    }

    /// The f32 values of a tensor the engine itself made as f32 (internal invariant).
    pub fn data(&self) -> &[f32] {
        match self.cpu_data() {
            CpuData::F32(v) => v,
            other => panic!(
                "internal: expected an f32 tensor, found {:?}",
                other.dtype()
            ),
        }
    }

    /// Mutable f32 values (copies the storage first if it is shared).
    pub fn data_mut(&mut self) -> &mut [f32] {
        match Arc::make_mut(&mut self.storage) {
            Storage::Cpu(CpuData::F32(v)) => v,
            Storage::Cpu(other) => panic!(
                "internal: expected an f32 tensor, found {:?}",
                other.dtype()
            ),
        }
    }

    /// A copy converted to f32.
    pub fn to_f32(&self) -> Tensor {
        match self.cpu_data() {
            CpuData::F32(_) => self.clone(),
            other => Tensor::from_f32(&self.shape, other.to_f32_vec()),
        }
    }

    /// Same storage, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            bail!("cannot reshape {:?} to {shape:?}", self.shape);
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
        })
    }
}
