//! The windowed-sinc resampler against closed forms: a resampled sine must equal the same sine
//! sampled at the new rate; content above the new Nyquist must vanish; DC and identity are exact.

use culturemert_raw::audio::resample::resample;
use std::f64::consts::PI;

const AMP: f64 = 0.8;

fn sine(rate: u32, f: f64, n: usize, phase: f64) -> Vec<f32> {
    (0..n)
        .map(|i| (AMP * (2.0 * PI * f * i as f64 / rate as f64 + phase).sin()) as f32)
        .collect()
}

/// Output samples far enough from both ends that the zero padding outside the signal is unseen:
/// the kernel reaches about 57 samples of the lower rate each side (see resample.rs).
fn interior(len: usize, from: u32, to: u32) -> std::ops::Range<usize> {
    let margin = (60.0 * to as f64 / from.min(to) as f64).ceil() as usize + 2;
    margin..len - margin
}

/// Max |y - ideal| over the interior, relative to the amplitude.
fn max_rel_error(from: u32, to: u32, f: f64, seconds: f64) -> f64 {
    let n = (from as f64 * seconds) as usize;
    let y = resample(&sine(from, f, n, 0.3), from, to).unwrap();
    let ideal = sine(to, f, y.len(), 0.3);
    interior(y.len(), from, to)
        .map(|i| (y[i] as f64 - ideal[i] as f64).abs())
        .fold(0.0, f64::max)
        / AMP
}

#[test]
fn passband_sines_keep_frequency_phase_and_amplitude() {
    // Pass band is 0..0.9 x min(from, to)/2; test up to 0.88 of it.
    let cases: [(u32, u32, &[f64]); 4] = [
        (44100, 24000, &[50.0, 440.0, 3001.0, 7500.0, 10_500.0]),
        (16000, 24000, &[50.0, 440.0, 3001.0, 7000.0]),
        (48000, 24000, &[50.0, 440.0, 3001.0, 7500.0, 10_500.0]),
        (22050, 24000, &[440.0, 9000.0]),
    ];
    let mut worst: f64 = 0.0;
    for (from, to, freqs) in cases {
        for &f in freqs {
            let e = max_rel_error(from, to, f, 0.1);
            eprintln!("{from} -> {to} Hz, {f} Hz sine: max relative error {e:.2e}");
            worst = worst.max(e);
            // Kaiser design for 90 dB: pass-band ripple about 10^(-90/20) = 3.2e-5, plus f32 rounding.
            assert!(
                e < 1e-4,
                "{from}->{to} at {f} Hz: max relative error {e:.2e}"
            );
        }
    }
    eprintln!("worst {worst:.2e}");
}

#[test]
fn rate_pair_with_many_phases_uses_the_direct_path_correctly() {
    // gcd(44101, 24000) = 1: 24000 phases, too many to tabulate, so taps are computed per sample.
    let e = max_rel_error(44101, 24000, 1234.5, 0.05);
    eprintln!("44101 -> 24000, 1234.5 Hz: max relative error {e:.2e}");
    assert!(e < 1e-4, "max relative error {e:.2e}");
}

#[test]
fn content_above_the_new_nyquist_is_removed() {
    // Downsampling: every tone at or above the new Nyquist (12 kHz) would alias into the band;
    // the Kaiser design is for 90 dB (measured: -97.5 dB worst, at 13 kHz from 44.1 kHz).
    let cases: [(u32, u32, &[f64]); 2] = [
        (
            44100,
            24000,
            &[12_000.0, 13_000.0, 15_000.0, 20_000.0, 22_000.0],
        ),
        (48000, 24000, &[12_000.0, 14_000.0, 18_000.0, 23_900.0]),
    ];
    for (from, to, freqs) in cases {
        for &f in freqs {
            let n = (from as f64 * 0.1) as usize;
            let y = resample(&sine(from, f, n, 0.1), from, to).unwrap();
            let r = interior(y.len(), from, to);
            let rms =
                (r.clone().map(|i| (y[i] as f64).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
            let db = 20.0 * (rms / (AMP / 2f64.sqrt())).log10();
            eprintln!("{from} -> {to} Hz, {f} Hz tone: {db:.1} dB");
            assert!(
                db < -90.0,
                "{from}->{to}: {f} Hz tone only attenuated to {db:.1} dB"
            );
        }
    }
}

#[test]
fn dc_is_preserved_and_equal_rates_are_identity() {
    let x = vec![0.7f32; 2000];
    for (from, to) in [
        (44100, 24000),
        (16000, 24000),
        (48000, 24000),
        (44101, 24000),
    ] {
        let y = resample(&x, from, to).unwrap();
        let r = interior(y.len(), from, to);
        let e = r.map(|i| (y[i] - 0.7).abs()).fold(0f32, f32::max);
        assert!(e <= 2e-6, "{from}->{to}: DC error {e:e}");
    }
    let x: Vec<f32> = (0..123).map(|i| (i as f32 * 0.77).sin()).collect();
    assert_eq!(resample(&x, 24000, 24000).unwrap(), x);
}

#[test]
fn output_length_is_ceil_of_len_times_ratio() {
    for (len, from, to, want) in [
        (441, 44100, 24000, 240),
        (442, 44100, 24000, 241),
        (1000, 16000, 24000, 1500),
        (7, 48000, 24000, 4),
        (1, 44100, 24000, 1),
        (0, 44100, 24000, 0),
    ] {
        assert_eq!(
            resample(&vec![0.1; len], from, to).unwrap().len(),
            want,
            "{len} at {from}->{to}"
        );
    }
    assert!(resample(&[1.0], 0, 24000).is_err());
    assert!(resample(&[1.0], 24000, 0).is_err());
}

/// A range of the output (what a training crop resamples) is bit-identical to that slice of the whole
/// resampled signal, at its start, in the middle and at the end; a range past the end is an error.
#[test]
fn a_range_equals_the_slice_of_the_whole() {
    let x: Vec<f32> = (0..20_000)
        .map(|i| ((i as f32 * 0.013).sin() + (i as f32 * 0.31).cos() * 0.3) * 0.5)
        .collect();
    for (from, to) in [
        (44100, 24000),
        (16000, 24000),
        (48000, 24000),
        (24000, 24000),
    ] {
        let whole = culturemert_raw::audio::resample::resample(&x, from, to).unwrap();
        assert_eq!(
            whole.len(),
            culturemert_raw::audio::resample::resampled_len(x.len(), from, to)
        );
        let n = whole.len();
        for (start, count) in [(0, 5000), (n / 2 - 777, 4097), (n - 3000, 3000)] {
            let part = culturemert_raw::audio::resample::resample_range(&x, from, to, start, count)
                .unwrap();
            assert!(
                part == whole[start..start + count],
                "{from} -> {to} Hz, samples {start}..+{count}"
            );
        }
        assert!(
            culturemert_raw::audio::resample::resample_range(&x, from, to, n - 10, 11).is_err()
        );
    }
}

/// Resampling from only the input window a range reads (what a training crop of a WAV file decodes)
/// is bit-identical to that slice of the whole resampled signal; one sample less on either side of
/// the window (where the signal has one) is an error, never a silently different result.
#[test]
fn a_range_from_its_input_window_equals_the_slice_of_the_whole() {
    use culturemert_raw::audio::resample::{input_window, resample_window};
    let x: Vec<f32> = (0..20_000)
        .map(|i| ((i as f32 * 0.017).sin() + (i as f32 * 0.29).cos() * 0.3) * 0.5)
        .collect();
    for (from, to) in [
        (44100, 24000),
        (16000, 24000),
        (48000, 24000),
        (22050, 24000),
        (24000, 24000),
    ] {
        let whole = resample(&x, from, to).unwrap();
        let n = whole.len();
        for (start, count) in [(0, 5000), (n / 2 - 777, 4097), (n - 3000, 3000), (17, 1)] {
            let (lo, hi) = input_window(x.len(), from, to, start, count);
            let part = resample_window(&x[lo..hi], lo, x.len(), from, to, start, count).unwrap();
            assert!(
                part == whole[start..start + count],
                "{from} -> {to} Hz, samples {start}..+{count} from input {lo}..{hi}"
            );
            if lo > 0 {
                let short =
                    resample_window(&x[lo + 1..hi], lo + 1, x.len(), from, to, start, count);
                assert!(
                    short.is_err(),
                    "{from} -> {to}: window missing its first sample"
                );
            }
            if hi < x.len() {
                let short = resample_window(&x[lo..hi - 1], lo, x.len(), from, to, start, count);
                assert!(
                    short.is_err(),
                    "{from} -> {to}: window missing its last sample"
                );
            }
        }
    }
}
