//! Every input format the README promises, decoded from small files committed under tests/data/formats
//! (made once by tests/data/make.sh with sox, flac, lame and oggenc) and compared with the WAV each one
//! was encoded from:
//!
//! * 32-bit float WAV masters (16 kHz mono, 44.1 and 48 kHz stereo) against the closed form make.sh
//!   writes (recomputed here), to one f32 rounding;
//! * 16/24/32-bit integer WAVs (sox, no dither) against their float master, to one LSB of the format;
//! * FLAC (16-bit mono, 24-bit stereo) against the integer WAV it was encoded from: bit-exact;
//! * MP3 and Ogg Vorbis against their 16-bit WAV, after aligning the codec delay (the lag of maximum
//!   cross-correlation, searched up to 4000 samples), by SNR over the aligned overlap.
//!
//! Channel count, sample rate and length are checked everywhere (lossy: length within the codec's
//! delay and padding).

use culturemert_raw::audio::wav::{load_mono, read_audio};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/formats")
        .join(name)
}

/// make.sh's master signal: per channel two tones, 10 ms raised-cosine fades, 0.3 s.
fn closed_form(rate: u32, channels: usize) -> Vec<Vec<f64>> {
    let n = (0.3 * rate as f64).round() as usize;
    let fade = (0.010 * rate as f64).round() as usize;
    let tones = [
        (440.0, 0.45, 0.0, 660.0, 0.20, 0.7),
        (550.0, 0.35, 1.1, 825.0, 0.25, 2.3),
    ];
    let pi = std::f64::consts::PI;
    (0..channels)
        .map(|c| {
            let (f1, a1, p1, f2, a2, p2) = tones[c];
            (0..n)
                .map(|i| {
                    let t = i as f64 / rate as f64;
                    let w = if i < fade {
                        0.5 - 0.5 * (pi * i as f64 / fade as f64).cos()
                    } else if i >= n - fade {
                        0.5 - 0.5 * (pi * (n - 1 - i) as f64 / fade as f64).cos()
                    } else {
                        1.0
                    };
                    w * (a1 * (2.0 * pi * f1 * t + p1).sin() + a2 * (2.0 * pi * f2 * t + p2).sin())
                })
                .collect()
        })
        .collect()
}

fn read(name: &str) -> (Vec<Vec<f32>>, u32) {
    read_audio(&data(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn float_wav_masters_match_the_closed_form() {
    for (name, rate, ch) in [
        ("m16k_mono_f32.wav", 16000, 1),
        ("m44k_stereo_f32.wav", 44100, 2),
        ("m48k_stereo_f32.wav", 48000, 2),
    ] {
        let (got, r) = read(name);
        assert_eq!((r, got.len()), (rate, ch), "{name}");
        for (c, want) in closed_form(rate, ch).iter().enumerate() {
            assert_eq!(got[c].len(), want.len(), "{name} channel {c}");
            // One f32 rounding of values below 1 is at most 2^-25; allow one ulp at 1.0 (2^-24).
            let err = got[c]
                .iter()
                .zip(want)
                .map(|(&x, &y)| (x as f64 - y).abs())
                .fold(0.0, f64::max);
            assert!(err <= 6e-8, "{name} channel {c}: max err {err:.2e}");
        }
    }
}

#[test]
fn integer_wavs_match_their_float_master_to_one_lsb() {
    for (name, master, bits) in [
        ("m16k_mono_s16.wav", "m16k_mono_f32.wav", 16),
        ("m44k_stereo_s24.wav", "m44k_stereo_f32.wav", 24),
        ("m48k_stereo_s32.wav", "m48k_stereo_f32.wav", 32),
    ] {
        let (got, r) = read(name);
        let (want, rm) = read(master);
        assert_eq!((r, got.len()), (rm, want.len()), "{name}");
        let lsb = 1.0 / (1u64 << (bits - 1)) as f64;
        for (c, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = max_abs_diff(g, w);
            // The decoder returns f32: at 32 bits one LSB is below f32's own rounding (2^-25 here).
            let tol = lsb.max(2f64.powi(-25));
            println!("{name} ch {c}: max |x - master| = {err:.3e} (1 LSB = {lsb:.3e})");
            assert!(err <= tol, "{name} channel {c}: {err:.3e} > {tol:.3e}");
            // And not trivially: the integer grid is visible for 16 and 24 bits.
            if bits < 24 {
                assert!(err > 0.0, "{name}: identical to the float master?");
            }
        }
    }
}

#[test]
fn flac_is_bit_exact_with_its_wav() {
    for (flac, wav) in [
        ("m16k_mono_s16.flac", "m16k_mono_s16.wav"),
        ("m44k_stereo_s24.flac", "m44k_stereo_s24.wav"),
    ] {
        let (got, r) = read(flac);
        let (want, rw) = read(wav);
        assert_eq!((r, got.len()), (rw, want.len()), "{flac}");
        for (c, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{flac} channel {c}");
        }
    }
}

/// SNR in dB of `got` against `want` after shifting `got` by the lag (0..=max_lag) of maximum
/// cross-correlation, over the overlap; also returns the lag.
fn aligned_snr(got: &[f32], want: &[f32], max_lag: usize) -> (f64, usize) {
    let dot = |lag: usize| -> f64 {
        want.iter()
            .zip(got.iter().skip(lag))
            .map(|(&w, &g)| w as f64 * g as f64)
            .sum()
    };
    let lag = (0..=max_lag.min(got.len().saturating_sub(1)))
        .max_by(|&a, &b| dot(a).total_cmp(&dot(b)))
        .unwrap();
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&w, &g) in want.iter().zip(got.iter().skip(lag)) {
        signal += (w as f64).powi(2);
        noise += (w as f64 - g as f64).powi(2);
    }
    (10.0 * (signal / noise).log10(), lag)
}

#[test]
fn lossy_codecs_match_their_wav_after_the_codec_delay() {
    // (file, source, minimum SNR in dB). Measured on 2026-12-04 (symphonia 0.5): MP3 32 kbps mono
    // 16 kHz 26.0 dB (MPEG-2, no gapless trim: lag 1105 = LAME's 576 + the decoder's 529), MP3 192 kbps
    // stereo 30.5 dB (lag 0: the LAME header's delay is honoured), Vorbis q6 39.2-39.4 dB. The bounds
    // are 6 dB (4x in noise power) below. A decoder fault lands far lower: half or double scale gives
    // 6 dB, swapped channels (different tones per channel) or a wrong rate about 0 dB or less, and a
    // dropped or repeated frame misaligns the rest of the clip.
    let cases = [
        ("m16k_mono_s16.mp3", "m16k_mono_s16.wav", 20.0),
        ("m44k_stereo_s16.mp3", "m44k_stereo_f32.wav", 24.5),
        ("m16k_mono_s16.ogg", "m16k_mono_s16.wav", 33.0),
        ("m44k_stereo_s16.ogg", "m44k_stereo_f32.wav", 33.0),
    ];
    for (name, source, min_snr) in cases {
        let (got, r) = read(name);
        let (want, rw) = if source == "m44k_stereo_f32.wav" {
            // The 44.1 kHz lossy files were encoded from a 16-bit copy of the float master; compare
            // with the master quantised the same way (sox rounds to nearest without dither).
            let (m, rm) = read(source);
            let q: Vec<Vec<f32>> = m
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|&x| {
                            ((x as f64 * 32768.0).round().clamp(-32768.0, 32767.0) / 32768.0) as f32
                        })
                        .collect()
                })
                .collect();
            (q, rm)
        } else {
            read(source)
        };
        assert_eq!((r, got.len()), (rw, want.len()), "{name}: rate / channels");
        for (c, (g, w)) in got.iter().zip(&want).enumerate() {
            let (snr, lag) = aligned_snr(g, w, 4000);
            println!(
                "{name} ch {c}: {} decoded vs {} source samples, lag {lag}, SNR {snr:.1} dB",
                g.len(),
                w.len()
            );
            assert!(
                g.len() + 4000 >= w.len() && g.len() <= w.len() + 4000,
                "{name}: length {} vs {}",
                g.len(),
                w.len()
            );
            assert!(
                snr >= min_snr,
                "{name} channel {c}: SNR {snr:.1} dB < {min_snr}"
            );
        }
    }
}

#[test]
fn every_format_loads_as_mono_at_the_model_rate() {
    // The path embed and train use: mixdown + resampling to 24 kHz gives 0.3 s of audio from each file.
    for name in [
        "m16k_mono_f32.wav",
        "m16k_mono_s16.wav",
        "m44k_stereo_s24.wav",
        "m48k_stereo_s32.wav",
        "m16k_mono_s16.flac",
        "m44k_stereo_s24.flac",
    ] {
        let x = load_mono(&data(name), 24000).unwrap();
        assert_eq!(x.len(), 7200, "{name}");
    }
}

/// A frame range of a WAV file read on its own (what a training crop reads) is bit-identical to those
/// frames of the whole decoded file, mixed to mono, for every integer and float WAV; the header gives
/// the frame count and rate; a range past the end is an error.
#[test]
fn wav_frame_ranges_equal_the_slice_of_the_whole_file() {
    use culturemert_raw::audio::wav::{load_mono_native, read_wav_mono_range, wav_frames};
    for name in [
        "m16k_mono_s16.wav",
        "m16k_mono_f32.wav",
        "m44k_stereo_s24.wav",
        "m44k_stereo_f32.wav",
        "m48k_stereo_s32.wav",
    ] {
        let path = data(name);
        let (whole, rate) = load_mono_native(&path).unwrap();
        let (frames, header_rate) = wav_frames(&path).unwrap().expect("a WAV file");
        assert_eq!((frames, header_rate), (whole.len(), rate), "{name}");
        for (first, count) in [(0, 100), (frames / 3, 1234), (frames - 57, 57)] {
            let part = read_wav_mono_range(&path, first, count).unwrap();
            assert!(
                part == whole[first..first + count],
                "{name} {first}..+{count}"
            );
        }
        assert!(
            read_wav_mono_range(&path, frames - 10, 11).is_err(),
            "{name}"
        );
    }
    assert!(wav_frames(&data("m16k_mono_s16.flac")).unwrap().is_none());
}
