//! `culturemert-raw similarity --out <PREFIX> <HIST>...`: codebook-averaged Jensen-Shannon divergence
//! and cosine distance between datasets' codeword histograms (format in `eval::similarity`).
//!
//! Writes <PREFIX>_jsd.csv and <PREFIX>_cosine.csv (square matrices), <PREFIX>.csv (one row per pair:
//! dataset_a,dataset_b,jsd,cosine_distance) and heatmaps <PREFIX>_jsd.svg, <PREFIX>_cosine.svg.
use crate::eval::similarity::{
    csv_field, heatmap_svg, matrix_csv, read_histogram, similarity_matrices, LogBase,
};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output prefix: writes <PREFIX>.csv, <PREFIX>_jsd.csv, <PREFIX>_cosine.csv, <PREFIX>_{jsd,cosine}.svg.
    #[arg(long)]
    pub out: PathBuf,
    /// Logarithm of the JS divergence: e (nats, max ln 2) or two (bits, max 1).
    #[arg(long, value_enum, default_value_t = LogBase::E)]
    pub log_base: LogBase,
    /// Histogram files (safetensors with tensor `histogram` [codebooks, codebook_size]).
    #[arg(required = true, num_args = 2..)]
    pub histograms: Vec<PathBuf>,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write(path: PathBuf, text: &str) -> Result<()> {
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        args.histograms.len() >= 2,
        "similarity needs at least two histograms"
    );
    let hists = args
        .histograms
        .iter()
        .map(|p| read_histogram(p))
        .collect::<Result<Vec<_>>>()?;
    let m = similarity_matrices(&hists, args.log_base)?;
    let unit = match m.base {
        LogBase::E => "nats",
        LogBase::Two => "bits",
    };
    let n = m.datasets.len();
    let mut pairs = format!("dataset_a,dataset_b,jsd_{unit},cosine_distance\n");
    for i in 0..n {
        for j in i + 1..n {
            pairs += &format!(
                "{},{},{:.9},{:.9}\n",
                csv_field(&m.datasets[i]),
                csv_field(&m.datasets[j]),
                m.jsd[i * n + j],
                m.cosine[i * n + j]
            );
        }
    }
    write(with_suffix(&args.out, ".csv"), &pairs)?;
    write(
        with_suffix(&args.out, "_jsd.csv"),
        &matrix_csv(&m.datasets, &m.jsd),
    )?;
    write(
        with_suffix(&args.out, "_cosine.csv"),
        &matrix_csv(&m.datasets, &m.cosine),
    )?;
    let cb = hists[0].codebooks;
    write(
        with_suffix(&args.out, "_jsd.svg"),
        &heatmap_svg(
            &format!("Jensen-Shannon divergence ({unit}), mean of {cb} codebooks"),
            &m.datasets,
            &m.jsd,
        ),
    )?;
    write(
        with_suffix(&args.out, "_cosine.svg"),
        &heatmap_svg(
            &format!("Cosine distance, mean of {cb} codebooks"),
            &m.datasets,
            &m.cosine,
        ),
    )?;
    println!(
        "{} datasets; wrote {}*.csv and *.svg",
        n,
        args.out.display()
    );
    Ok(())
}
