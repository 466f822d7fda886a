//! The pytorch_model.bin reader against safetensors truth written by PyTorch itself
//! (reference/make_golden_torch_bin.py): exact equality of every byte, shape and dtype.

mod common;

use std::path::{Path, PathBuf};

use culturemert_raw::model::torch_bin::{
    read_as_raw_tensors, read_torch_state_dict, TorchDType, TorchData,
};
use safetensors::{Dtype, SafeTensors};

fn golden(name: &str) -> PathBuf {
    common::golden(name)
}

fn le_bytes(d: &TorchData) -> Vec<u8> {
    match d {
        TorchData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TorchData::U8(v) => v.clone(),
        TorchData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

fn same_dtype(t: TorchDType, s: Dtype) -> bool {
    matches!(
        (t, s),
        (TorchDType::F32, Dtype::F32)
            | (TorchDType::F64, Dtype::F64)
            | (TorchDType::F16, Dtype::F16)
            | (TorchDType::BF16, Dtype::BF16)
            | (TorchDType::I64, Dtype::I64)
            | (TorchDType::I32, Dtype::I32)
            | (TorchDType::I16, Dtype::I16)
            | (TorchDType::I8, Dtype::I8)
            | (TorchDType::U8, Dtype::U8)
            | (TorchDType::Bool, Dtype::BOOL)
    )
}

/// Every tensor of `bin` equals the tensor of the same name in `truth`, bit for bit.
fn check_against_truth(bin: &Path, truth: &Path) -> Vec<String> {
    let got = read_torch_state_dict(bin).unwrap();
    let bytes = std::fs::read(truth).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(got.len(), st.len(), "tensor count");
    for (name, shape, data) in &got {
        let view = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("{name} not in truth"));
        assert_eq!(shape.as_slice(), view.shape(), "{name} shape");
        assert!(
            same_dtype(data.dtype(), view.dtype()),
            "{name}: {:?} vs {:?}",
            data.dtype(),
            view.dtype()
        );
        assert_eq!(data.len(), shape.iter().product::<usize>(), "{name} length");
        assert!(le_bytes(data) == view.data(), "{name}: values differ");
    }
    got.into_iter().map(|(n, _, _)| n).collect()
}

#[test]
fn state_dict_with_views_dtypes_and_metadata_matches_torch() {
    let dir = golden("torch_bin");
    let names = check_against_truth(
        &dir.join("pytorch_model.bin"),
        &dir.join("truth.safetensors"),
    );
    // File order is kept (the truth's metadata records torch's key order).
    let bytes = std::fs::read(dir.join("truth.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().unwrap()["order"].clone();
    assert_eq!(names.join(","), order);
    // The cases the golden was built to cover are really there.
    for want in [
        "0.weight_g",
        "0.weight_v",
        "3.num_batches_tracked",
        "extra.transposed",
        "extra.bf16_t",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing");
    }
}

#[test]
fn to_f32_and_raw_tensor_conversion() {
    let path = golden("torch_bin/pytorch_model.bin");
    let all = read_torch_state_dict(&path).unwrap();
    let find = |n: &str| all.iter().find(|(k, _, _)| k == n).unwrap().2.clone();
    assert_eq!(
        find("extra.i32").to_f32(),
        vec![-2147483648.0, 17.0, 2147483648.0, -3.0]
    );
    assert_eq!(find("extra.bool").to_f32(), vec![1.0, 0.0, 1.0]);
    assert_eq!(find("extra.scalar").to_f32(), vec![2.5]);
    // row_view = base[2] with base = arange(60)/7 - 3 (float32), so element j is (20+j)/7 - 3.
    let row = find("extra.row_view").to_f32();
    for (j, v) in row.iter().enumerate() {
        assert_eq!(*v, (20.0 + j as f32) / 7.0 - 3.0);
    }
    let raw = read_as_raw_tensors(&path).unwrap();
    assert_eq!(raw.len(), all.len());
    assert_eq!(raw["extra.transposed"].0, vec![10, 6]);
}

#[test]
fn hf_mert_checkpoint_matches_its_safetensors() {
    // A tiny MERT written by torch.save from make_golden_model.py, with its model.safetensors twin.
    check_against_truth(
        &golden("tiny_postln_bin/pytorch_model.bin"),
        &golden("tiny_postln/model.safetensors"),
    );
}

fn err_of(name: &str) -> String {
    let p = golden(name);
    let e = read_torch_state_dict(&p).expect_err("expected an error");
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains(&p.display().to_string()),
        "no file name in: {msg}"
    );
    msg
}

#[test]
fn clear_errors() {
    assert!(err_of("torch_bin/legacy.bin").contains("legacy"));
    assert!(err_of("torch_bin/bad_global.bin").contains("unsupported global fractions.Fraction"));
    assert!(err_of("torch_bin/bad_entry.bin").contains("entry step is an int"));
    assert!(err_of("torch_bin/missing.bin").contains("cannot open"));
    assert!(err_of("torch_bin/truth.safetensors").contains("not a zip"));
}

/// Writes a torch-style zip (data.pkl, byteorder, version, data/0 under "tiny/") by hand;
/// torch.load reads the result (checked once by hand: [[1, 3, 5], [2, 4, 6]] for both byte orders).
fn write_zip(name: &str, pickle: &[u8], byteorder: &[u8], storage: &[u8]) -> PathBuf {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let dir = std::env::temp_dir().join(format!("cmr-torch-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (entry, bytes) in [
        ("tiny/data.pkl", pickle),
        ("tiny/byteorder", byteorder),
        ("tiny/version", b"3\n"),
        ("tiny/data/0", storage),
    ] {
        z.start_file(entry, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    path
}

/// Protocol-2 pickle of {"w": _rebuild_tensor_v2(storage '0' (7 floats), offset 1, size (2, 3),
/// stride (1, 2), False, OrderedDict())}, written opcode by opcode from the pickle spec.
/// The offset uses BININT and one size uses LONG1, which torch emits for larger numbers.
fn hand_pickle() -> Vec<u8> {
    let s = |x: &str| [&[b'X'][..], &(x.len() as u32).to_le_bytes(), x.as_bytes()].concat();
    [
        &b"\x80\x02}("[..],
        &s("w"),
        b"ctorch._utils\n_rebuild_tensor_v2\n((",
        &s("storage"),
        b"ctorch\nFloatStorage\n",
        &s("0"),
        &s("cpu"),
        b"K\x07tQ",
        b"J\x01\x00\x00\x00",
        b"K\x02\x8a\x01\x03\x86",
        b"K\x01K\x02\x86",
        b"\x89ccollections\nOrderedDict\n)Rq\x00",
        b"tRu.",
    ]
    .concat()
}

#[test]
fn hand_built_checkpoint_big_endian_and_bad_opcode() {
    // Element [i][j] is storage[1 + i + 2j]: [[1, 3, 5], [2, 4, 6]].
    let want = vec![1.0f32, 3.0, 5.0, 2.0, 4.0, 6.0];
    let le: Vec<u8> = (0..7).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let be: Vec<u8> = (0..7).flat_map(|v| (v as f32).to_be_bytes()).collect();
    for (name, order, bytes) in [
        ("le.bin", &b"little"[..], &le),
        ("be.bin", &b"big"[..], &be),
    ] {
        let got = read_torch_state_dict(&write_zip(name, &hand_pickle(), order, bytes)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.as_str(), got[0].1.as_slice()),
            ("w", &[2usize, 3][..])
        );
        assert_eq!(got[0].2, TorchData::F32(want.clone()), "{name}");
    }
    // INST ('i') is valid pickle but never used by torch.save: the error must name it.
    let mut bad = hand_pickle();
    let at = bad.len() - 4;
    bad.insert(at, b'i');
    let e = read_torch_state_dict(&write_zip("bad-op.bin", &bad, b"little", &le)).unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(msg.contains("unsupported pickle opcode 0x69"), "{msg}");
    // A view reaching past its storage is refused, not read out of bounds.
    let e = read_torch_state_dict(&write_zip(
        "short.bin",
        &hand_pickle(),
        b"little",
        &le[..24],
    ))
    .unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains("tensor w") && msg.contains("6-element storage"),
        "{msg}"
    );
}
