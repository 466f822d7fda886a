//! Label files, `tokenize --out` files and `tokenize --dataset` (label files + token histogram), via
//! the library functions behind the command (src/model/teacher.rs).

use culturemert_raw::audio::wav::{load_mono, write_wav_i16};
use culturemert_raw::eval::similarity::read_histogram;
use culturemert_raw::model::rp_teacher::{RandomProjectionTeacher, RpConfig};
use culturemert_raw::model::teacher::{
    label_dataset, label_path, read_labels, write_code_file, write_labels, LabelMeta, Teacher,
    HISTOGRAM_FILE,
};
use indicatif::ProgressBar;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("t3-tokenize-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_teacher(seed: u64) -> RandomProjectionTeacher {
    RandomProjectionTeacher::new(RpConfig {
        codebooks: 3,
        codebook_size: 50,
        seed,
        ..RpConfig::default()
    })
    .unwrap()
}

/// A ragged clip: two tones switching half-way, frequency set by `f`.
fn clip(n: usize, f: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 24000.0;
            let g = if i < n / 2 { f } else { 1.5 * f };
            0.3 * (2.0 * std::f32::consts::PI * g * t).sin() + 0.05 * (t * 1e4).sin().powi(3)
        })
        .collect()
}

fn meta() -> LabelMeta {
    LabelMeta {
        teacher: "random-projection".into(),
        codebook_size: 7,
        hop: 320,
        sample_rate: 24000,
        params: "seed=1".into(),
    }
}

#[test]
fn label_path_replaces_the_extension() {
    assert_eq!(
        label_path(Path::new("a/b/song.wav")),
        PathBuf::from("a/b/song.tokens.safetensors")
    );
    assert_eq!(
        label_path(Path::new("x.y.flac")),
        PathBuf::from("x.y.tokens.safetensors")
    );
    assert_eq!(
        label_path(Path::new("noext")),
        PathBuf::from("noext.tokens.safetensors")
    );
}

#[test]
fn label_files_round_trip_and_reject_bad_input() {
    let d = scratch("labels");
    let p = d.join("a.tokens.safetensors");
    let codes: Vec<u16> = (0..2 * 5).map(|i| (i * 3 % 7) as u16).collect();
    write_labels(&p, &codes, 2, 5, &meta()).unwrap();
    let (back, k, t, m) = read_labels(&p).unwrap();
    assert_eq!((back, k, t, m), (codes.clone(), 2, 5, meta()));
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);

    assert!(
        write_labels(&p, &codes, 3, 5, &meta()).is_err(),
        "shape mismatch"
    );
    let mut big = codes.clone();
    big[4] = 7;
    assert!(
        write_labels(&p, &big, 2, 5, &meta()).is_err(),
        "code >= codebook_size"
    );

    // Wrong dtype, missing metadata, out-of-range code, not safetensors.
    let write_raw = |name: &str, dtype: Dtype, bytes: &[u8], md: HashMap<String, String>| {
        let q = d.join(name);
        let view =
            TensorView::new(dtype, vec![1, bytes.len() * 8 / dtype.bitsize()], bytes).unwrap();
        safetensors::serialize_to_file([("codes", view)], Some(md), &q).unwrap();
        q
    };
    let full_md = HashMap::from([
        ("teacher".to_string(), "x".to_string()),
        ("codebook_size".to_string(), "4".to_string()),
        ("hop".to_string(), "320".to_string()),
        ("sample_rate".to_string(), "24000".to_string()),
        ("params".to_string(), "".to_string()),
    ]);
    let q = write_raw("i32.safetensors", Dtype::I32, &[0u8; 8], full_md.clone());
    let e = format!("{:#}", read_labels(&q).unwrap_err());
    assert!(e.contains("dtype") && e.contains("i32.safetensors"), "{e}");
    let mut no_hop = full_md.clone();
    no_hop.remove("hop");
    let q = write_raw("nohop.safetensors", Dtype::U16, &[0u8; 4], no_hop);
    let e = format!("{:#}", read_labels(&q).unwrap_err());
    assert!(e.contains("`hop`"), "{e}");
    let q = write_raw("range.safetensors", Dtype::U16, &[1, 0, 4, 0], full_md);
    let e = format!("{:#}", read_labels(&q).unwrap_err());
    assert!(e.contains("code 4 at codebook 0, frame 1"), "{e}");
    std::fs::write(d.join("junk.safetensors"), b"not a file").unwrap();
    assert!(read_labels(&d.join("junk.safetensors")).is_err());
    assert!(read_labels(&d.join("missing.safetensors")).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn code_file_has_one_i64_tensor_per_input() {
    let d = scratch("out");
    let t = small_teacher(4);
    let (a, b) = (d.join("one.wav"), d.join("two.wav"));
    write_wav_i16(&a, &clip(5000, 300.0), 24000).unwrap();
    write_wav_i16(&b, &clip(24000 + 17, 500.0), 16000).unwrap(); // resampled to 24 kHz
    let out = d.join("codes.safetensors");
    write_code_file(&t, &[a.clone(), b.clone()], &out, &ProgressBar::hidden()).unwrap();
    let buf = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&buf).unwrap();
    for (name, path) in [("one", &a), ("two", &b)] {
        let view = st.tensor(name).unwrap();
        let want = t.encode(&load_mono(path, 24000).unwrap()).unwrap();
        let frames = want.len() / 3;
        assert_eq!(view.dtype(), Dtype::I64);
        assert_eq!(view.shape(), &[3, frames]);
        let got: Vec<u16> = view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u16)
            .collect();
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(st.tensor("one").unwrap().shape()[1], 16); // ceil(5000 / 320)
                                                          // Duplicate stems are refused.
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::copy(&a, d.join("sub/one.wav")).unwrap();
    let e = write_code_file(
        &t,
        &[a, d.join("sub/one.wav")],
        &out,
        &ProgressBar::hidden(),
    );
    assert!(e.is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn dataset_mode_labels_every_file_and_counts_codes() {
    let root = scratch("dataset");
    let dir = root.join("makam");
    std::fs::create_dir_all(dir.join("disc1/deep")).unwrap();
    let files = [
        dir.join("a.wav"),
        dir.join("disc1/B.WAV"),
        dir.join("disc1/deep/c.wav"),
    ];
    for (i, f) in files.iter().enumerate() {
        write_wav_i16(f, &clip(3000 + 1111 * i, 200.0 + 150.0 * i as f32), 24000).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not audio").unwrap();
    let t = small_teacher(9);
    let bar = ProgressBar::hidden();

    let s = label_dataset(&t, &dir, false, &bar).unwrap();
    assert_eq!(
        (s.dataset.as_str(), s.files, s.encoded, s.reused),
        ("makam", 3, 3, 0)
    );
    let mut counts = vec![0f64; 3 * 50];
    let mut frames_total = 0;
    for f in &files {
        let (codes, k, frames, m) = read_labels(&label_path(f)).unwrap();
        assert_eq!(k, 3);
        assert_eq!(m, t.label_meta());
        assert_eq!(codes, t.encode(&load_mono(f, 24000).unwrap()).unwrap());
        for kk in 0..3 {
            for &c in &codes[kk * frames..(kk + 1) * frames] {
                counts[kk * 50 + c as usize] += 1.0;
            }
        }
        frames_total += frames;
    }
    assert_eq!(s.frames, frames_total);
    let h = read_histogram(&dir.join(HISTOGRAM_FILE)).unwrap();
    assert_eq!(
        (h.dataset.as_str(), h.codebooks, h.codebook_size),
        ("makam", 3, 50)
    );
    assert_eq!(h.counts, counts);

    // Up-to-date label files are reused; --force recomputes; a new seed makes them stale.
    let again = label_dataset(&t, &dir, false, &bar).unwrap();
    assert_eq!((again.encoded, again.reused), (0, 3));
    assert_eq!(
        read_histogram(&dir.join(HISTOGRAM_FILE)).unwrap().counts,
        counts
    );
    let forced = label_dataset(&t, &dir, true, &bar).unwrap();
    assert_eq!((forced.encoded, forced.reused), (3, 0));
    let other = label_dataset(&small_teacher(10), &dir, false, &bar).unwrap();
    assert_eq!((other.encoded, other.reused), (3, 0));
    assert!(read_labels(&label_path(&files[0]))
        .unwrap()
        .3
        .params
        .contains("seed=10"));

    // A directory without audio is an error naming it.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = format!("{:#}", label_dataset(&t, &empty, false, &bar).unwrap_err());
    assert!(e.contains("no audio files") && e.contains("empty"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
