//! Token-level culture similarity (CultureMERT section 5.2): Jensen-Shannon divergence and cosine
//! distance between per-dataset codeword distributions, per codebook, averaged over codebooks.
//!
//! Histogram file (written by `tokenize`, read here): a safetensors file with one tensor `histogram`
//! of shape [codebooks, codebook_size] (8 x 1024 for MERT's EnCodec targets), dtype I64, I32, F32 or
//! F64, holding non-negative codeword counts, and metadata `{"dataset": <name>}` (the file stem is used
//! when the metadata is missing).
//!
//! JSD(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, with p and q the counts of one codebook
//! normalised to sum 1. This is the *divergence*: with natural logarithms it lies in [0, ln 2]; in
//! bits (divided by ln 2) in [0, 1]. `scipy.spatial.distance.jensenshannon` returns the JS *distance*,
//! the square root of this divergence. Cosine distance = 1 - p.q / (|p| |q|) (scale-free, so counts
//! and probabilities give the same value), as `scipy.spatial.distance.cosine`.
use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

pub const HISTOGRAM_TENSOR: &str = "histogram";
pub const DATASET_KEY: &str = "dataset";

/// Codeword counts of one dataset, [codebooks, codebook_size] row-major.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub dataset: String,
    pub codebooks: usize,
    pub codebook_size: usize,
    pub counts: Vec<f64>,
}

impl Histogram {
    fn codebook(&self, c: usize) -> &[f64] {
        &self.counts[c * self.codebook_size..(c + 1) * self.codebook_size]
    }
}

/// Logarithm base of the JS divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogBase {
    /// Natural logarithm (nats): JSD in [0, ln 2].
    #[default]
    E,
    /// Base 2 (bits): JSD in [0, 1].
    Two,
}

/// Write integer counts as a histogram file (dtype I64).
pub fn write_histogram(
    path: &Path,
    dataset: &str,
    codebooks: usize,
    codebook_size: usize,
    counts: &[i64],
) -> Result<()> {
    ensure!(
        counts.len() == codebooks * codebook_size,
        "{} counts for a [{codebooks}, {codebook_size}] histogram",
        counts.len()
    );
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::I64, vec![codebooks, codebook_size], &bytes)
        .map_err(|e| anyhow::anyhow!("histogram tensor: {e:?}"))?;
    let meta = HashMap::from([(DATASET_KEY.to_string(), dataset.to_string())]);
    safetensors::serialize_to_file([(HISTOGRAM_TENSOR, view)], Some(meta), path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
}

/// Read a histogram file (see the module docs for the format).
pub fn read_histogram(path: &Path) -> Result<Histogram> {
    let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&buf)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e:?}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let t = st
        .tensor(HISTOGRAM_TENSOR)
        .map_err(|_| anyhow::anyhow!("{} has no tensor '{HISTOGRAM_TENSOR}'", path.display()))?;
    let &[codebooks, codebook_size] = t.shape() else {
        bail!(
            "{}: '{HISTOGRAM_TENSOR}' has shape {:?}, expected [codebooks, codebook_size]",
            path.display(),
            t.shape()
        );
    };
    let d = t.data();
    let counts: Vec<f64> = match t.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => bail!(
            "{}: '{HISTOGRAM_TENSOR}' has dtype {other:?}; expected I64, I32, F32 or F64",
            path.display()
        ),
    };
    if let Some(i) = counts.iter().position(|c| !(c.is_finite() && *c >= 0.0)) {
        bail!(
            "{}: count {} at index {i} is not a non-negative number",
            path.display(),
            counts[i]
        );
    }
    let dataset = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(DATASET_KEY).cloned())
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let h = Histogram {
        dataset,
        codebooks,
        codebook_size,
        counts,
    };
    for c in 0..codebooks {
        ensure!(
            h.codebook(c).iter().sum::<f64>() > 0.0,
            "{}: codebook {c} of dataset '{}' has no counts",
            path.display(),
            h.dataset
        );
    }
    Ok(h)
}

fn normalised(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    v.iter().map(|x| x / s).collect()
}

/// Jensen-Shannon divergence of two count vectors (normalised here), natural log.
pub fn js_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (p, q) = (normalised(p), normalised(q));
    // x ln(x / m) with 0 ln 0 = 0; m > 0 wherever x > 0.
    let kl_term = |x: f64, m: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    let sum: f64 = p
        .iter()
        .zip(&q)
        .map(|(&a, &b)| {
            let m = 0.5 * (a + b);
            kl_term(a, m) + kl_term(b, m)
        })
        .sum();
    0.5 * sum
}

/// Cosine distance 1 - p.q / (|p| |q|).
pub fn cosine_distance(p: &[f64], q: &[f64]) -> f64 {
    let dot: f64 = p.iter().zip(q).map(|(a, b)| a * b).sum();
    let np: f64 = p.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nq: f64 = q.iter().map(|a| a * a).sum::<f64>().sqrt();
    1.0 - dot / (np * nq)
}

/// Pairwise matrices (row-major [n, n]) of codebook-averaged JSD and cosine distance.
#[derive(Clone, Debug)]
pub struct SimilarityMatrices {
    pub datasets: Vec<String>,
    pub jsd: Vec<f64>,
    pub cosine: Vec<f64>,
    pub base: LogBase,
}

/// JSD and cosine distance per codebook, averaged over codebooks, for every pair of histograms.
pub fn similarity_matrices(hists: &[Histogram], base: LogBase) -> Result<SimilarityMatrices> {
    ensure!(!hists.is_empty(), "no histograms");
    let (cb, size) = (hists[0].codebooks, hists[0].codebook_size);
    for h in hists {
        ensure!(
            (h.codebooks, h.codebook_size) == (cb, size),
            "dataset '{}' has a [{}, {}] histogram but '{}' has [{cb}, {size}]",
            h.dataset,
            h.codebooks,
            h.codebook_size,
            hists[0].dataset
        );
    }
    let scale = match base {
        LogBase::E => 1.0,
        LogBase::Two => 1.0 / std::f64::consts::LN_2,
    };
    let n = hists.len();
    let (mut jsd, mut cosine) = (vec![0.0; n * n], vec![0.0; n * n]);
    for i in 0..n {
        for j in 0..n {
            let (mut js, mut cs) = (0.0, 0.0);
            for c in 0..cb {
                js += js_divergence(hists[i].codebook(c), hists[j].codebook(c));
                cs += cosine_distance(hists[i].codebook(c), hists[j].codebook(c));
            }
            jsd[i * n + j] = scale * js / cb as f64;
            cosine[i * n + j] = cs / cb as f64;
        }
    }
    Ok(SimilarityMatrices {
        datasets: hists.iter().map(|h| h.dataset.clone()).collect(),
        jsd,
        cosine,
        base,
    })
}

/// Quote a CSV field when it contains a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A square matrix as CSV: header `dataset,<d1>,<d2>,..`, one row per dataset.
pub fn matrix_csv(datasets: &[String], m: &[f64]) -> String {
    let n = datasets.len();
    let mut s = String::from("dataset");
    for d in datasets {
        s += &format!(",{}", csv_field(d));
    }
    s.push('\n');
    for i in 0..n {
        s += &csv_field(&datasets[i]);
        for j in 0..n {
            s += &format!(",{:.9}", m[i * n + j]);
        }
        s.push('\n');
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// White (0) to dark blue (the matrix maximum), linear in value.
fn cell_colour(t: f64) -> (u8, u8, u8) {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    (lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

/// Heatmap of a square matrix as a self-contained SVG: coloured cells, dataset labels, values printed.
pub fn heatmap_svg(title: &str, datasets: &[String], m: &[f64]) -> String {
    let n = datasets.len();
    let cell = 64.0;
    let label_w = 8.0
        * datasets
            .iter()
            .map(|d| d.chars().count())
            .max()
            .unwrap_or(1) as f64
        + 16.0;
    let top = label_w + 40.0;
    let (w, h) = (
        label_w + cell * n as f64 + 20.0,
        top + cell * n as f64 + 20.0,
    );
    let max = m.iter().cloned().fold(0.0f64, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        w / 2.0,
        xml_escape(title)
    );
    for (i, d) in datasets.iter().enumerate() {
        let c = label_w + cell * (i as f64 + 0.5);
        let r = top + cell * (i as f64 + 0.5);
        // Column labels are rotated to fit long dataset names.
        s += &format!(
            "<text x=\"{c:.1}\" y=\"{:.1}\" transform=\"rotate(-60 {c:.1} {:.1})\">{}</text>\n",
            top - 6.0,
            top - 6.0,
            xml_escape(d)
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>\n",
            label_w - 6.0,
            r,
            xml_escape(d)
        );
    }
    for i in 0..n {
        for j in 0..n {
            let v = m[i * n + j];
            let t = if max > 0.0 { v / max } else { 0.0 };
            let (r, g, b) = cell_colour(t);
            let (x, y) = (label_w + cell * j as f64, top + cell * i as f64);
            let ink = if t > 0.5 { "white" } else { "black" };
            s += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({r},{g},{b})\" stroke=\"#888\" stroke-width=\"0.5\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\" fill=\"{ink}\">{v:.4}</text>\n",
                x + cell / 2.0,
                y + cell / 2.0
            );
        }
    }
    s += "</svg>\n";
    s
}
