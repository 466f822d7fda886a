//! `culturemert-raw cqt --out OUT.safetensors AUDIO...`: the MERT CQT target (nnAudio CQT1992v2 with
//! MERT's settings, magnitude, no log; see src/audio/cqt.rs) of each input, resampled to 24 kHz mono.
//!
//! Output: one f32 tensor [frames, 336] per input, frames = floor(samples / 320) + 1, named after the
//! input's file stem (`song` for `dir/song.wav`); two inputs with the same stem are an error. The
//! metadata records the settings and, under `source.<name>`, each input's path. All outputs are held in
//! memory until the file is written (~6 MB per minute of audio).

use crate::audio::cqt::CqtPlan;
use crate::audio::wav::load_mono;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

const SAMPLE_RATE: u32 = 24000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output safetensors file (one [frames, 336] f32 tensor per input, named after its file stem).
    #[arg(long)]
    pub out: PathBuf,
    /// cpu | cuda | cuda:N | emu | auto: where the FFT and the kernel bands run.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Audio files (WAV, FLAC, MP3, Ogg); mixed to mono and resampled to 24 kHz.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let names = crate::io::names::tensor_names(&args.inputs)?;
    let plan = CqtPlan::mert_shared();
    let device = crate::device::Device::parse(&args.device)?;
    eprintln!("cqt: device {device}");
    let device_plan = match &device {
        crate::device::Device::Cpu => None,
        crate::device::Device::Cuda(dev) => {
            Some((dev, crate::cuda::cqt::CqtDevicePlan::new(dev, plan)?))
        }
    };
    let bar = ProgressBar::new(args.inputs.len() as u64);
    if args.inputs.len() > 1 {
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .context("progress bar template")?,
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }

    // name -> (frames, little-endian f32 bytes)
    let mut outputs: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
    let mut metadata = HashMap::new();
    for (path, name) in args.inputs.iter().zip(&names) {
        bar.set_message(name.clone());
        let audio =
            load_mono(path, SAMPLE_RATE).with_context(|| format!("reading {}", path.display()))?;
        let (frames, values) = match &device_plan {
            None => plan.forward(&audio),
            Some((dev, dp)) => {
                let out = dp.forward_clip(dev, &dev.htod(&audio)?)?;
                (plan.n_frames(audio.len()), dev.dtoh(&out)?)
            }
        };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        outputs.insert(name.clone(), (frames, bytes));
        metadata.insert(format!("source.{name}"), path.display().to_string());
        bar.inc(1);
    }
    bar.finish_and_clear();

    for (k, v) in [
        ("cqt", "nnAudio CQT1992v2 magnitude (MERT): hann, norm=1, center=True, constant pad, librosa scaling"),
        ("sample_rate", "24000"),
        ("hop_length", "320"),
        ("fmin", "32.7"),
        ("n_bins", "336"),
        ("bins_per_octave", "48"),
        ("layout", "[frames, n_bins]"),
    ] {
        metadata.insert(k.to_string(), v.to_string());
    }
    let n_bins = plan.n_bins();
    let views = outputs
        .iter()
        .map(|(name, (frames, bytes))| {
            let view = TensorView::new(Dtype::F32, vec![*frames, n_bins], bytes)
                .with_context(|| format!("tensor {name}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, Some(metadata), &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} CQT tensor(s) to {}",
        outputs.len(),
        args.out.display()
    );
    Ok(())
}
