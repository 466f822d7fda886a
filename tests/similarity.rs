//! JS divergence and cosine distance against scipy 1.17 golden values
//! (reference/make_golden_metrics.py -> reference/golden/similarity.safetensors), the histogram file
//! round trip, and the `similarity` command's CSV/SVG outputs.

mod common;
use culturemert_raw::cli::similarity::{run, Args};
use culturemert_raw::eval::similarity::{
    cosine_distance, js_divergence, read_histogram, similarity_matrices, write_histogram, LogBase,
};
use safetensors::SafeTensors;
use std::path::PathBuf;

const TOL: f64 = 1e-12;

struct Golden {
    d: usize,
    c: usize,
    k: usize,
    counts: Vec<i64>,
    jsd_e: Vec<f64>,
    jsd_2: Vec<f64>,
    cosine: Vec<f64>,
    pair_jsd: Vec<f64>,
    pair_cos: Vec<f64>,
}

fn load() -> Golden {
    let path = common::golden("similarity.safetensors");
    let buf = std::fs::read(path).expect("golden similarity file");
    let st = SafeTensors::deserialize(&buf).unwrap();
    let f = |n: &str| -> Vec<f64> {
        let t = st.tensor(n).unwrap();
        t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let counts = st.tensor("counts").unwrap();
    let shape = counts.shape().to_vec();
    Golden {
        d: shape[0],
        c: shape[1],
        k: shape[2],
        counts: counts
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
            .collect(),
        jsd_e: f("jsd_e"),
        jsd_2: f("jsd_2"),
        cosine: f("cosine"),
        pair_jsd: f("pair01_jsd_e"),
        pair_cos: f("pair01_cosine"),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let p = std::env::temp_dir().join(format!("cmr-sim-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Write the golden datasets as histogram files named ds0.. and return their paths.
fn write_files(g: &Golden, dir: &std::path::Path) -> Vec<PathBuf> {
    let per = g.c * g.k;
    (0..g.d)
        .map(|i| {
            let p = dir.join(format!("h{i}.safetensors"));
            write_histogram(
                &p,
                &format!("ds{i}"),
                g.c,
                g.k,
                &g.counts[i * per..(i + 1) * per],
            )
            .unwrap();
            p
        })
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn per_codebook_values_match_scipy() {
    let g = load();
    let per = g.c * g.k;
    let cb = |d: usize, c: usize| -> Vec<f64> {
        g.counts[d * per + c * g.k..d * per + (c + 1) * g.k]
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let jsd: Vec<f64> = (0..g.c)
        .map(|c| js_divergence(&cb(0, c), &cb(1, c)))
        .collect();
    let cos: Vec<f64> = (0..g.c)
        .map(|c| cosine_distance(&cb(0, c), &cb(1, c)))
        .collect();
    let (ej, ec) = (max_err(&jsd, &g.pair_jsd), max_err(&cos, &g.pair_cos));
    eprintln!("per-codebook JSD err {ej:.3e}, cosine err {ec:.3e}");
    assert!(ej <= TOL && ec <= TOL);
}

#[test]
fn matrices_from_histogram_files_match_scipy() {
    let g = load();
    let dir = temp_dir("mat");
    let files = write_files(&g, &dir);
    let hists: Vec<_> = files.iter().map(|p| read_histogram(p).unwrap()).collect();
    assert_eq!(hists[2].dataset, "ds2");
    assert_eq!((hists[0].codebooks, hists[0].codebook_size), (g.c, g.k));
    let m = similarity_matrices(&hists, LogBase::E).unwrap();
    let m2 = similarity_matrices(&hists, LogBase::Two).unwrap();
    let (e1, e2, e3) = (
        max_err(&m.jsd, &g.jsd_e),
        max_err(&m2.jsd, &g.jsd_2),
        max_err(&m.cosine, &g.cosine),
    );
    eprintln!("matrix errors: jsd(e) {e1:.3e}, jsd(2) {e2:.3e}, cosine {e3:.3e}");
    assert!(e1 <= TOL && e2 <= TOL && e3 <= TOL);
    // Bounds that hold for any pair: JSD <= ln 2 nats.
    assert!(m
        .jsd
        .iter()
        .all(|&v| (-1e-15..=std::f64::consts::LN_2).contains(&v)));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn f32_histograms_are_read_and_bad_files_refused() {
    let dir = temp_dir("fmt");
    // F32 counts written with the safetensors crate directly, no metadata: name from the file stem.
    let counts: Vec<f32> = vec![1.0, 0.0, 3.0, 2.0, 2.0, 0.5];
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &bytes).unwrap();
    let p = dir.join("lyra.safetensors");
    safetensors::serialize_to_file([("histogram", view.clone())], None, &p).unwrap();
    let h = read_histogram(&p).unwrap();
    assert_eq!(h.dataset, "lyra");
    assert_eq!(h.counts, vec![1.0, 0.0, 3.0, 2.0, 2.0, 0.5]);

    let wrong_name = dir.join("wrong.safetensors");
    safetensors::serialize_to_file([("counts", view)], None, &wrong_name).unwrap();
    let e = read_histogram(&wrong_name).unwrap_err().to_string();
    assert!(e.contains("histogram"), "{e}");

    let empty_cb = dir.join("empty.safetensors");
    write_histogram(&empty_cb, "x", 2, 2, &[1, 2, 0, 0]).unwrap();
    let e = read_histogram(&empty_cb).unwrap_err().to_string();
    assert!(e.contains("codebook 1"), "{e}");

    let negative = dir.join("neg.safetensors");
    write_histogram(&negative, "x", 1, 2, &[1, -2]).unwrap();
    assert!(read_histogram(&negative).is_err());

    let other = dir.join("other.safetensors");
    write_histogram(&other, "y", 3, 2, &[1, 1, 1, 1, 1, 1]).unwrap();
    let a = read_histogram(&p).unwrap();
    let b = read_histogram(&other).unwrap();
    assert!(
        similarity_matrices(&[a, b], LogBase::E).is_err(),
        "shape mismatch"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn command_writes_csv_matrices_and_svg_heatmaps() {
    let g = load();
    let dir = temp_dir("cli");
    let files = write_files(&g, &dir);
    let prefix = dir.join("sim");
    run(Args {
        out: prefix.clone(),
        log_base: LogBase::E,
        histograms: files,
    })
    .unwrap();
    let read = |s: &str| std::fs::read_to_string(dir.join(format!("sim{s}"))).unwrap();

    let jsd_csv = read("_jsd.csv");
    let rows: Vec<&str> = jsd_csv.lines().collect();
    assert_eq!(rows[0], "dataset,ds0,ds1,ds2,ds3");
    assert_eq!(rows.len(), g.d + 1);
    for (i, row) in rows[1..].iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[0], format!("ds{i}"));
        for j in 0..g.d {
            let v: f64 = cells[j + 1].parse().unwrap();
            assert!(
                (v - g.jsd_e[i * g.d + j]).abs() <= 1e-9,
                "printed with 9 decimals"
            );
        }
    }
    let pairs = read(".csv");
    assert_eq!(pairs.lines().count(), 1 + g.d * (g.d - 1) / 2);
    let first: Vec<&str> = pairs.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(&first[..2], &["ds0", "ds1"]);
    assert!((first[3].parse::<f64>().unwrap() - g.cosine[1]).abs() <= 1e-9);

    for name in ["_jsd.svg", "_cosine.svg"] {
        let svg = read(name);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            g.d * g.d,
            "one cell per pair"
        );
        assert!(svg.contains(">ds3<"));
    }
    assert!(read("_cosine.svg").contains(&format!(">{:.4}<", g.cosine[1])));
    std::fs::remove_dir_all(dir).unwrap();
}
