//! Audio file input/output for the CLI, training and tests.
//!
//! WAV goes through `hound` (8/16/24/32-bit int, 32-bit float, any channel count);
//! FLAC, MP3 and Ogg Vorbis go through `symphonia`. Integer samples are scaled the way
//! soundfile/torchaudio do: `x / 2^(bits-1)`, so int16 full scale is [-1, 32767/32768].

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::resample::resample;

/// Sample encodings the WAV writer can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavSampleFormat {
    /// 8-bit unsigned PCM (stored offset by 128, as the WAV format requires).
    Int8,
    Int16,
    Int24,
    Int32,
    Float32,
}

impl WavSampleFormat {
    fn spec_bits(self) -> (u16, hound::SampleFormat) {
        match self {
            WavSampleFormat::Int8 => (8, hound::SampleFormat::Int),
            WavSampleFormat::Int16 => (16, hound::SampleFormat::Int),
            WavSampleFormat::Int24 => (24, hound::SampleFormat::Int),
            WavSampleFormat::Int32 => (32, hound::SampleFormat::Int),
            WavSampleFormat::Float32 => (32, hound::SampleFormat::Float),
        }
    }
}

/// Reads an audio file, mixes it to mono (mean over channels) and resamples to `target_rate`.
/// WAV is read with hound; FLAC/MP3/Ogg Vorbis with symphonia (chosen by content, then extension).
pub fn load_mono(path: &Path, target_rate: u32) -> Result<Vec<f32>> {
    let (channels, rate) = read_audio(path)?;
    let mono = mix_to_mono(&channels);
    if rate == target_rate {
        return Ok(mono);
    }
    resample(&mono, rate, target_rate).with_context(|| {
        format!(
            "resampling {} from {rate} Hz to {target_rate} Hz",
            path.display()
        )
    })
}

/// Mono samples of any supported audio file at its own sample rate: (samples, rate).
pub fn load_mono_native(path: &Path) -> Result<(Vec<f32>, u32)> {
    let (channels, rate) = read_audio(path)?;
    Ok((mix_to_mono(&channels), rate))
}

/// Frames and rate of a WAV file from its header (None for other containers, which must be decoded
/// whole to know their length).
pub fn wav_frames(path: &Path) -> Result<Option<(usize, u32)>> {
    if !matches!(sniff(path)?, Container::Wav) {
        return Ok(None);
    }
    let reader = hound::WavReader::open(path)
        .with_context(|| format!("cannot read WAV file {}", path.display()))?;
    Ok(Some((
        reader.duration() as usize,
        reader.spec().sample_rate,
    )))
}

/// Mono frames `first..first + count` of a WAV file (the channel mean, bit-identical to those samples
/// of [`load_mono_native`]), reading only them: a crop of a long recording reads the crop.
pub fn read_wav_mono_range(path: &Path, first: usize, count: usize) -> Result<Vec<f32>> {
    let name = path.display();
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("cannot read WAV file {name}"))?;
    let spec = reader.spec();
    let n_ch = spec.channels as usize;
    ensure!(n_ch > 0, "WAV file {name} declares zero channels");
    let frames = reader.duration() as usize;
    ensure!(
        first + count <= frames,
        "WAV file {name}: frames {first}..{} requested of {frames}",
        first + count
    );
    reader
        .seek(first as u32)
        .with_context(|| format!("seeking in WAV file {name}"))?;
    let n = count * n_ch;
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .take(n)
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("corrupt or truncated sample data in WAV file {name}"))?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .samples::<i32>()
                .take(n)
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("corrupt or truncated sample data in WAV file {name}"))?
        }
        (fmt, bits) => bail!("unsupported WAV sample format in {name}: {fmt:?} with {bits} bits"),
    };
    ensure!(
        interleaved.len() == n,
        "WAV file {name} is truncated: {} of {n} samples",
        interleaved.len()
    );
    Ok(mix_to_mono(&deinterleave(&interleaved, n_ch)))
}

/// Reads any supported audio file into per-channel sample vectors and its sample rate.
pub fn read_audio(path: &Path) -> Result<(Vec<Vec<f32>>, u32)> {
    match sniff(path)? {
        Container::Wav => read_wav(path),
        Container::Other => read_with_symphonia(path),
    }
}

/// Mean over channels; all channels must have the same length.
pub fn mix_to_mono(channels: &[Vec<f32>]) -> Vec<f32> {
    match channels {
        [] => Vec::new(),
        [only] => only.clone(),
        _ => {
            let n = channels[0].len();
            let inv = 1.0 / channels.len() as f32;
            (0..n)
                .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() * inv)
                .collect()
        }
    }
}

/// Reads a WAV file into per-channel f32 samples (ints scaled by 2^-(bits-1)) and its rate.
pub fn read_wav(path: &Path) -> Result<(Vec<Vec<f32>>, u32)> {
    let name = path.display();
    let reader =
        hound::WavReader::open(path).with_context(|| format!("cannot read WAV file {name}"))?;
    let spec = reader.spec();
    let n_ch = spec.channels as usize;
    if n_ch == 0 {
        bail!("WAV file {name} declares zero channels");
    }
    if spec.sample_rate == 0 {
        bail!("WAV file {name} declares a sample rate of 0 Hz");
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("corrupt or truncated sample data in WAV file {name}"))?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("corrupt or truncated sample data in WAV file {name}"))?
        }
        (fmt, bits) => bail!("unsupported WAV sample format in {name}: {fmt:?} with {bits} bits"),
    };
    if interleaved.is_empty() {
        bail!("WAV file {name} contains no audio samples");
    }
    if !interleaved.len().is_multiple_of(n_ch) {
        bail!(
            "WAV file {name} is truncated: {} samples is not a whole number of {n_ch}-channel frames",
            interleaved.len()
        );
    }
    Ok((deinterleave(&interleaved, n_ch), spec.sample_rate))
}

/// Writes per-channel samples (all the same length) as a WAV file in the given encoding.
/// Ints are `round(x * 2^(bits-1))` clamped to the type's range, so `k / 2^(bits-1)` round-trips exactly.
pub fn write_wav(
    path: &Path,
    channels: &[Vec<f32>],
    rate: u32,
    format: WavSampleFormat,
) -> Result<()> {
    let name = path.display();
    if channels.is_empty() || channels.len() > u16::MAX as usize {
        bail!("cannot write {name}: {} channels", channels.len());
    }
    let n = channels[0].len();
    if channels.iter().any(|c| c.len() != n) {
        bail!("cannot write {name}: channels have different lengths");
    }
    let (bits, sample_format) = format.spec_bits();
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create WAV file {name}"))?;
    let full = (1i64 << (bits - 1)) as f64;
    let quantize = |x: f32| (x as f64 * full).round().clamp(-full, full - 1.0) as i32;
    for i in 0..n {
        for c in channels {
            let x = c[i];
            let r = match format {
                WavSampleFormat::Float32 => w.write_sample(x),
                WavSampleFormat::Int8 => w.write_sample(quantize(x) as i8),
                WavSampleFormat::Int16 => w.write_sample(quantize(x) as i16),
                WavSampleFormat::Int24 | WavSampleFormat::Int32 => w.write_sample(quantize(x)),
            };
            r.with_context(|| format!("writing samples to {name}"))?;
        }
    }
    w.finalize()
        .with_context(|| format!("finalizing WAV file {name}"))
}

/// Writes mono 32-bit float WAV.
pub fn write_wav_f32(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    write_wav(path, &[samples.to_vec()], rate, WavSampleFormat::Float32)
}

/// Writes mono 16-bit PCM WAV (`round(x * 32768)` clamped to [-32768, 32767]).
pub fn write_wav_i16(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    write_wav(path, &[samples.to_vec()], rate, WavSampleFormat::Int16)
}

fn deinterleave(interleaved: &[f32], n_ch: usize) -> Vec<Vec<f32>> {
    (0..n_ch)
        .map(|c| interleaved.iter().skip(c).step_by(n_ch).copied().collect())
        .collect()
}

enum Container {
    Wav,
    Other,
}

/// Chooses the decoder from the first bytes ("RIFF....WAVE" is hound's), so a misnamed file still works.
fn sniff(path: &Path) -> Result<Container> {
    let name = path.display();
    let mut head = [0u8; 12];
    let mut f = File::open(path).with_context(|| format!("cannot open audio file {name}"))?;
    let mut got = 0;
    while got < head.len() {
        let k = f
            .read(&mut head[got..])
            .with_context(|| format!("cannot read audio file {name}"))?;
        if k == 0 {
            break;
        }
        got += k;
    }
    if got == 0 {
        bail!("audio file {name} is empty (0 bytes)");
    }
    if got == 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        return Ok(Container::Wav);
    }
    Ok(Container::Other)
}

/// Decodes the first audio track of a FLAC/MP3/Ogg Vorbis (or other symphonia-supported) file.
fn read_with_symphonia(path: &Path) -> Result<(Vec<Vec<f32>>, u32)> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
    use symphonia::core::errors::Error as SymErr;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let name = path.display();
    let file = File::open(path).with_context(|| format!("cannot open audio file {name}"))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions {
                // Trim encoder delay and padding (MP3/Vorbis) so lengths match the source.
                enable_gapless: true,
                ..Default::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!("{name} is not a recognised audio file (supported: WAV, FLAC, MP3, Ogg Vorbis)")
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .with_context(|| format!("audio file {name} has no decodable audio track"))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("unsupported codec in audio file {name}"))?;
    let mut rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut n_ch = track.codec_params.channels.map(|c| c.count()).unwrap_or(0);
    let mut interleaved: Vec<f32> = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    let (mut skipped, mut last_error) = (0usize, String::new());
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymErr::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => bail!("corrupt audio stream in {name}: {e}"),
        };
        if packet.track_id() != track_id {
            continue;
        }
        // A damaged packet (common in MP3 streams) is skipped, as players do; other errors stop.
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymErr::DecodeError(e)) => {
                skipped += 1;
                last_error = e.to_string();
                continue;
            }
            Err(e) => bail!("corrupt audio data in {name}: {e}"),
        };
        let spec = *decoded.spec();
        rate = spec.rate;
        n_ch = spec.channels.count();
        let needed = decoded.capacity() as u64;
        let b = match &mut buf {
            Some(b) if b.capacity() as u64 >= needed * n_ch as u64 => b,
            _ => buf.insert(SampleBuffer::new(needed, spec)),
        };
        b.copy_interleaved_ref(decoded);
        interleaved.extend_from_slice(b.samples());
    }
    if interleaved.is_empty() && skipped > 0 {
        bail!("audio file {name}: all {skipped} packets failed to decode ({last_error})");
    }
    if interleaved.is_empty() || n_ch == 0 {
        bail!("audio file {name} contains no audio samples");
    }
    if rate == 0 {
        bail!("audio file {name} does not declare a sample rate");
    }
    Ok((deinterleave(&interleaved, n_ch), rate))
}
