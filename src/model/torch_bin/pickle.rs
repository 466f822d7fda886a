//! The pickle VM behind the `pytorch_model.bin` reader: exactly the opcodes and globals a torch
//! state dict uses; anything else is an error naming the opcode or global.

use super::TorchDType;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    pub(super) key: String,
    pub(super) dtype: TorchDType,
}

#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// Pickle values. Memo lookups copy, which is exact for state dicts: no container is mutated
/// after a later reference to it is pickled.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    pub(super) fn kind(&self) -> String {
        match self {
            Value::Mark => "a mark".into(),
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Int(_) => "an int".into(),
            Value::Float(x) => format!("the float {x}"),
            Value::Str(_) => "a string".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("the global {m}.{n}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    pub(super) fn as_usize(&self, what: &str) -> Result<usize> {
        match self {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            other => bail!("{what} is {}, expected a non-negative int", other.kind()),
        }
    }

    pub(super) fn as_usize_tuple(&self, what: &str) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(|x| x.as_usize(what)).collect(),
            other => bail!("{what} is {}, expected a tuple of ints", other.kind()),
        }
    }
}

pub(super) struct Vm<'a> {
    code: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Vm<'a> {
    pub(super) fn new(code: &'a [u8]) -> Self {
        Vm {
            code,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.code.len());
        let end =
            end.with_context(|| format!("pickle ends inside an argument at byte {}", self.pos))?;
        let s = &self.code[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub(super) fn line(&mut self) -> Result<String> {
        let rest = &self.code[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("unterminated GLOBAL argument")?;
        let s = String::from_utf8(rest[..n].to_vec()).context("GLOBAL argument is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    pub(super) fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).context("string is not UTF-8")?,
        ))
    }

    pub(super) fn pop(&mut self) -> Result<Value> {
        self.stack.pop().context("pickle stack underflow")
    }

    /// Pops everything down to the topmost MARK.
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .context("no MARK on the stack")?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    pub(super) fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("pickle stack underflow")
    }

    pub(super) fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            self.step(op)
                .with_context(|| format!("pickle opcode 0x{op:02x} at byte {at}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    pub(super) fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    bail!("pickle protocol {proto} is not supported");
                }
            }
            0x95 => drop(self.take(8)?), // FRAME: framing is irrelevant to an in-memory reader
            b'.' => {}
            b'(' => self.stack.push(Value::Mark),
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                self.stack.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.stack.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap());
                self.stack.push(Value::Int(v as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                if n > 8 {
                    bail!("LONG1 of {n} bytes does not fit in 64 bits");
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.stack.push(Value::Float(v));
            }
            b'X' => {
                let n = self.u32()? as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            0x8c => {
                let n = self.u8()? as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            b'T' => {
                let n = self.u32()? as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            b'U' => {
                let n = self.u8()? as usize;
                let s = self.string(n)?;
                self.stack.push(s);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                    _ => bail!("STACK_GLOBAL needs two strings"),
                }
            }
            b'q' => {
                let i = self.u8()? as u32;
                let v = self.top()?.clone();
                self.memo.insert(i, v);
            }
            b'r' => {
                let i = self.u32()?;
                let v = self.top()?.clone();
                self.memo.insert(i, v);
            }
            0x94 => {
                let i = self.memo.len() as u32;
                let v = self.top()?.clone();
                self.memo.insert(i, v);
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                let v = self
                    .memo
                    .get(&i)
                    .with_context(|| format!("memo entry {i} is missing"))?
                    .clone();
                self.stack.push(v);
            }
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    bail!("pickle stack underflow");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(items));
            }
            b'a' => {
                let v = self.pop()?;
                match self.top()? {
                    Value::List(l) => l.push(v),
                    other => bail!("APPEND to {}", other.kind()),
                }
            }
            b'e' => {
                let items = self.pop_mark()?;
                match self.top()? {
                    Value::List(l) => l.extend(items),
                    other => bail!("APPENDS to {}", other.kind()),
                }
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top()? {
                    Value::Dict(d) => d.push((k, v)),
                    other => bail!("SETITEM on {}", other.kind()),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    bail!("SETITEMS with an odd number of items");
                }
                let mut it = items.into_iter();
                let pairs: Vec<(Value, Value)> =
                    std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect();
                match self.top()? {
                    Value::Dict(d) => d.extend(pairs),
                    other => bail!("SETITEMS on {}", other.kind()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(pid)?;
                self.stack.push(v);
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = reduce(func, args)?;
                self.stack.push(v);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict is its attribute dict (`_metadata` of a
                // state dict), of a tensor its Python attributes; neither holds tensor data.
                let _state = self.pop()?;
                match self.top()? {
                    Value::Dict(_) | Value::Tensor(_) => {}
                    other => bail!("BUILD on {}", other.kind()),
                }
            }
            _ => bail!("unsupported pickle opcode 0x{op:02x} ({:?})", op as char),
        }
        Ok(())
    }
}

/// `('storage', torch.<Type>Storage, key, location, numel)` -> a storage reference.
pub(super) fn persistent_load(pid: Value) -> Result<Value> {
    let items = match pid {
        Value::Tuple(items) => items,
        other => bail!("persistent id is {}, not a tuple", other.kind()),
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(module, class), Value::Str(key), _location, _numel]
            if tag == "storage" =>
        {
            let dtype = (module == "torch")
                .then(|| TorchDType::from_storage_name(class))
                .flatten()
                .with_context(|| format!("unsupported storage type {module}.{class}"))?;
            Ok(Value::Storage(StorageRef {
                key: key.clone(),
                dtype,
            }))
        }
        _ => bail!("unsupported persistent id {items:?}"),
    }
}

/// Calls the few globals a state dict uses.
pub(super) fn reduce(func: Value, args: Value) -> Result<Value> {
    let (module, name) = match func {
        Value::Global(m, n) => (m, n),
        other => bail!("REDUCE on {}, not a global", other.kind()),
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => bail!(
            "arguments of {module}.{name} are {}, not a tuple",
            other.kind()
        ),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor")
            if args.len() >= 4 =>
        {
            let storage = match &args[0] {
                Value::Storage(s) => s.clone(),
                other => bail!("{name}: storage argument is {}", other.kind()),
            };
            Ok(Value::Tensor(TensorRef {
                storage,
                offset: args[1].as_usize("storage offset")?,
                shape: args[2].as_usize_tuple("tensor size")?,
                stride: args[3].as_usize_tuple("tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter") if !args.is_empty() => match &args[0] {
            Value::Tensor(_) => Ok(args[0].clone()),
            other => bail!("_rebuild_parameter of {}", other.kind()),
        },
        _ => bail!(
            "unsupported global {module}.{name} with {} arguments",
            args.len()
        ),
    }
}
