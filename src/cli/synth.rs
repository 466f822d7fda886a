//! `culturemert-raw synth`: writes the synthetic multi-cultural corpus (WAV clips + tags.csv).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::audio::synth::{all_traditions, write_corpus, SynthConfig};

/// Generate the synthetic multi-cultural corpus (audio + tags).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory: gets <tradition>/<name>.wav and tags.csv.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 24)]
    pub clips_per_tradition: usize,
    /// Clip length in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f32,
    #[arg(long, default_value_t = 24000)]
    pub sample_rate: u32,
    /// Comma-separated subset of: western, makam, hindustani, carnatic, lyra (default: all).
    #[arg(long, value_delimiter = ',')]
    pub traditions: Option<Vec<String>>,
    /// Write into a non-empty output directory (files of the same name are replaced).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let out = &args.out;
    if out.exists() {
        if !out.is_dir() {
            bail!(
                "output path {} exists and is not a directory",
                out.display()
            );
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("reading output directory {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !args.force {
            bail!(
                "output directory {} is not empty (use --force to write into it)",
                out.display()
            );
        }
    }
    let cfg = SynthConfig {
        seed: args.seed,
        sample_rate: args.sample_rate,
        clip_seconds: args.seconds,
        clips_per_tradition: args.clips_per_tradition,
        traditions: args
            .traditions
            .unwrap_or_else(|| all_traditions().into_iter().map(String::from).collect()),
    };
    let t0 = Instant::now();
    let clips = write_corpus(out, &cfg)?;
    let audio_s = clips.len() as f64 * cfg.clip_seconds as f64;
    println!(
        "wrote {} clips ({audio_s:.0} s of audio) of {} to {} in {:.2} s; tags in {}",
        clips.len(),
        cfg.traditions.join(", "),
        out.display(),
        t0.elapsed().as_secs_f64(),
        out.join("tags.csv").display()
    );
    Ok(())
}
