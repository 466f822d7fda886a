//! Reader for PyTorch `pytorch_model.bin` files (the zip format of `torch.save`, torch >= 1.6),
//! without Python.
//!
//! The zip holds `<root>/data.pkl` (a pickle, protocol 2, describing the state dict), one raw
//! little-endian storage per `<root>/data/<key>`, and `<root>/byteorder` / `<root>/version`
//! records. Tensors in the pickle are `torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, ...)` calls whose storage argument is a persistent id
//! `('storage', torch.FloatStorage, key, location, numel)`. A small pickle VM runs exactly the
//! opcodes such files use; anything else is an error naming the opcode or global.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};

use crate::tensor::CpuData;

mod pickle;
use pickle::{TensorRef, Value, Vm};

/// Element types a torch storage can hold (those a state dict may contain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDType {
    /// From the storage class name in the pickle (`torch.FloatStorage` etc.).
    fn from_storage_name(name: &str) -> Option<TorchDType> {
        Some(match name {
            "FloatStorage" => TorchDType::F32,
            "DoubleStorage" => TorchDType::F64,
            "HalfStorage" => TorchDType::F16,
            "BFloat16Storage" => TorchDType::BF16,
            "LongStorage" => TorchDType::I64,
            "IntStorage" => TorchDType::I32,
            "ShortStorage" => TorchDType::I16,
            "CharStorage" => TorchDType::I8,
            "ByteStorage" => TorchDType::U8,
            "BoolStorage" => TorchDType::Bool,
            _ => return None,
        })
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 => 8,
            TorchDType::F32 | TorchDType::I32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }
}

/// The values of one tensor, contiguous in row-major order, in the file's own dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum TorchData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl TorchData {
    pub fn dtype(&self) -> TorchDType {
        match self {
            TorchData::F32(_) => TorchDType::F32,
            TorchData::F64(_) => TorchDType::F64,
            TorchData::F16(_) => TorchDType::F16,
            TorchData::BF16(_) => TorchDType::BF16,
            TorchData::I64(_) => TorchDType::I64,
            TorchData::I32(_) => TorchDType::I32,
            TorchData::I16(_) => TorchDType::I16,
            TorchData::I8(_) => TorchDType::I8,
            TorchData::U8(_) => TorchDType::U8,
            TorchData::Bool(_) => TorchDType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TorchData::F32(v) => v.len(),
            TorchData::F64(v) => v.len(),
            TorchData::F16(v) => v.len(),
            TorchData::BF16(v) => v.len(),
            TorchData::I64(v) => v.len(),
            TorchData::I32(v) => v.len(),
            TorchData::I16(v) => v.len(),
            TorchData::I8(v) => v.len(),
            TorchData::U8(v) => v.len(),
            TorchData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All values as f32 (f64 and large ints round to nearest f32).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            TorchData::F32(v) => v.clone(),
            TorchData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TorchData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TorchData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::I16(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            TorchData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

    /// Decodes contiguous little-endian element bytes.
    fn from_le_bytes(dtype: TorchDType, b: &[u8]) -> TorchData {
        fn each<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().unwrap()))
                .collect()
        }
        match dtype {
            TorchDType::F32 => TorchData::F32(each(b, f32::from_le_bytes)),
            TorchDType::F64 => TorchData::F64(each(b, f64::from_le_bytes)),
            TorchDType::F16 => TorchData::F16(each(b, f16::from_le_bytes)),
            TorchDType::BF16 => TorchData::BF16(each(b, bf16::from_le_bytes)),
            TorchDType::I64 => TorchData::I64(each(b, i64::from_le_bytes)),
            TorchDType::I32 => TorchData::I32(each(b, i32::from_le_bytes)),
            TorchDType::I16 => TorchData::I16(each(b, i16::from_le_bytes)),
            TorchDType::I8 => TorchData::I8(each(b, i8::from_le_bytes)),
            TorchDType::U8 => TorchData::U8(b.to_vec()),
            TorchDType::Bool => TorchData::Bool(b.iter().map(|&x| x != 0).collect()),
        }
    }

    /// Into the engine's CPU storage: f64 narrows to f32, i8/i16 widen to i32, bool becomes u8.
    pub fn into_cpu_data(self) -> CpuData {
        match self {
            TorchData::F32(v) => CpuData::F32(v),
            TorchData::F64(v) => CpuData::F32(v.into_iter().map(|x| x as f32).collect()),
            TorchData::F16(v) => CpuData::F16(v),
            TorchData::BF16(v) => CpuData::BF16(v),
            TorchData::I64(v) => CpuData::I64(v),
            TorchData::I32(v) => CpuData::I32(v),
            TorchData::I16(v) => CpuData::I32(v.into_iter().map(i32::from).collect()),
            TorchData::I8(v) => CpuData::I32(v.into_iter().map(i32::from).collect()),
            TorchData::U8(v) => CpuData::U8(v),
            TorchData::Bool(v) => CpuData::U8(v.into_iter().map(u8::from).collect()),
        }
    }
}

/// Reads every tensor of a `torch.save`d state dict, in file order, made contiguous.
pub fn read_torch_state_dict(path: &Path) -> Result<Vec<(String, Vec<usize>, TorchData)>> {
    read_inner(path).with_context(|| format!("reading PyTorch checkpoint {}", path.display()))
}

/// Same as [`read_torch_state_dict`], keyed by name in the engine's raw-tensor map.
pub fn read_as_raw_tensors(path: &Path) -> Result<crate::io::safetensors::RawTensors> {
    let mut out = crate::io::safetensors::RawTensors::new();
    for (name, shape, data) in read_torch_state_dict(path)? {
        if out
            .insert(name.clone(), (shape, data.into_cpu_data()))
            .is_some()
        {
            bail!("{}: tensor {name} appears twice", path.display());
        }
    }
    Ok(out)
}

fn read_inner(path: &Path) -> Result<Vec<(String, Vec<usize>, TorchData)>> {
    let file = File::open(path).context("cannot open file")?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        anyhow!(
            "not a zip-format torch.save file ({e}); the legacy pre-1.6 format is not supported"
        )
    })?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .context("no <root>/data.pkl record in the archive")?;
    let root = pkl_name.trim_end_matches("data.pkl").to_string();
    let big_endian = match read_entry(&mut zip, &format!("{root}byteorder")) {
        Ok(b) => match b.as_slice() {
            b"little" => false,
            b"big" => true,
            other => bail!(
                "unknown byteorder record {:?}",
                String::from_utf8_lossy(other)
            ),
        },
        Err(_) => false, // older writers omit the record; they were little-endian only
    };
    let pickle = read_entry(&mut zip, &pkl_name)?;
    let top = Vm::new(&pickle)
        .run()
        .with_context(|| format!("unpickling {pkl_name}"))?;
    let items = match top {
        Value::Dict(items) => items,
        other => bail!("top-level object is {}, not a state dict", other.kind()),
    };

    let mut entries = Vec::with_capacity(items.len());
    for (k, v) in items {
        match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => entries.push((name, t)),
            (Value::Str(name), other) => {
                bail!("state dict entry {name} is {}, not a tensor", other.kind())
            }
            (other, _) => bail!("state dict key is {}, not a string", other.kind()),
        }
    }
    // Storages are loaded once and dropped after their last tensor, bounding peak memory.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (_, t) in &entries {
        *uses.entry(t.storage.key.clone()).or_default() += 1;
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let key = &t.storage.key;
        if !storages.contains_key(key) {
            let mut bytes = read_entry(&mut zip, &format!("{root}data/{key}"))
                .with_context(|| format!("storage of tensor {name}"))?;
            if big_endian {
                let es = t.storage.dtype.size_in_bytes();
                bytes.chunks_exact_mut(es).for_each(|c| c.reverse());
            }
            storages.insert(key.clone(), bytes);
        }
        let data = gather(&t, &storages[key]).with_context(|| format!("tensor {name}"))?;
        let left = uses.get_mut(key).expect("counted above");
        *left -= 1;
        if *left == 0 {
            storages.remove(key);
        }
        out.push((name, t.shape, data));
    }
    Ok(out)
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .with_context(|| format!("no record {name} in the archive"))?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf)
        .with_context(|| format!("reading record {name}"))?;
    Ok(buf)
}

/// Copies a (possibly strided, offset) view out of its storage into row-major order.
fn gather(t: &TensorRef, storage: &[u8]) -> Result<TorchData> {
    let es = t.storage.dtype.size_in_bytes();
    if !storage.len().is_multiple_of(es) {
        bail!(
            "storage {} has {} bytes, not a multiple of {es}",
            t.storage.key,
            storage.len()
        );
    }
    let n_storage = storage.len() / es;
    if t.shape.len() != t.stride.len() {
        bail!(
            "size {:?} and stride {:?} differ in rank",
            t.shape,
            t.stride
        );
    }
    let numel: usize = t.shape.iter().product();
    if numel == 0 {
        return Ok(TorchData::from_le_bytes(t.storage.dtype, &[]));
    }
    let last = t.offset
        + t.shape
            .iter()
            .zip(&t.stride)
            .map(|(&n, &s)| (n - 1) * s)
            .sum::<usize>();
    if last >= n_storage {
        bail!(
            "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a {n_storage}-element storage",
            t.offset,
            t.shape,
            t.stride
        );
    }
    let contiguous_stride: Vec<usize> = contiguous_strides(&t.shape);
    let is_contiguous = t
        .shape
        .iter()
        .zip(&t.stride)
        .zip(&contiguous_stride)
        .all(|((&n, &s), &c)| n == 1 || s == c);
    if is_contiguous {
        let bytes = &storage[t.offset * es..(t.offset + numel) * es];
        return Ok(TorchData::from_le_bytes(t.storage.dtype, bytes));
    }
    // Odometer over the row-major index, tracking the strided source element.
    let mut bytes = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; t.shape.len()];
    let mut src = t.offset;
    for _ in 0..numel {
        bytes.extend_from_slice(&storage[src * es..(src + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            src += t.stride[d];
            if idx[d] < t.shape[d] {
                break;
            }
            src -= t.stride[d] * t.shape[d];
            idx[d] = 0;
        }
    }
    Ok(TorchData::from_le_bytes(t.storage.dtype, &bytes))
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}
