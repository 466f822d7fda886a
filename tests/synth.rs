//! The synthetic corpus: determinism, shapes, and musical properties measured from the audio with
//! analyses that know nothing of the generator (FFT peak pitch, Goertzel drone persistence,
//! high-band spectral-flux onsets).

use std::collections::HashMap;
use std::time::Instant;

use culturemert_raw::audio::fft::{Complex, RealFftPlan};
use culturemert_raw::audio::synth::{
    all_traditions, assign_splits, generate, tag_vocabulary, write_corpus, SynthClip, SynthConfig,
};

const SR: f32 = 24000.0;

fn cfg(seed: u64, clips: usize, secs: f32, traditions: &[&str]) -> SynthConfig {
    SynthConfig {
        seed,
        sample_rate: SR as u32,
        clip_seconds: secs,
        clips_per_tradition: clips,
        traditions: traditions.iter().map(|s| s.to_string()).collect(),
    }
}

fn has(c: &SynthClip, tag: &str) -> bool {
    c.tags.iter().any(|t| t == tag)
}

/// Magnitude spectrum of a Hann-windowed frame zero-padded to `nfft`.
fn spectrum(frame: &[f32], nfft: usize, plan: &RealFftPlan) -> Vec<f64> {
    let n = frame.len();
    let mut buf = vec![0f64; nfft];
    for (i, &x) in frame.iter().enumerate() {
        let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
        buf[i] = x as f64 * w;
    }
    let mut out = vec![Complex::ZERO; nfft / 2 + 1];
    plan.forward(&buf, &mut out);
    out.iter().map(|c| c.abs()).collect()
}

/// Frequency of the strongest spectral peak in [lo, hi] Hz, refined by a parabola through the
/// log-magnitudes of the peak bin and its neighbours.
fn peak_hz(mag: &[f64], nfft: usize, lo: f64, hi: f64) -> f64 {
    let bin = SR as f64 / nfft as f64;
    let (a, b) = ((lo / bin) as usize, (hi / bin) as usize);
    let k = (a..b).max_by(|&i, &j| mag[i].total_cmp(&mag[j])).unwrap();
    let (l, c, r) = (mag[k - 1].ln(), mag[k].ln(), mag[k + 1].ln());
    let delta = 0.5 * (l - r) / (l - 2.0 * c + r);
    (k as f64 + delta) * bin
}

/// Pitches (cents relative to A4 = 440 Hz) of notes held steady for >= 3 hops: frames of 4096
/// samples, hop 1024, padded to 16384; a run continues while the peak stays within 3 cents.
fn steady_pitches(x: &[f32]) -> Vec<f64> {
    let (n, hop, nfft) = (4096, 1024, 16384);
    let plan = RealFftPlan::new(nfft);
    let cents: Vec<f64> = (0..(x.len() - n) / hop)
        .map(|f| {
            let mag = spectrum(&x[f * hop..f * hop + n], nfft, &plan);
            1200.0 * (peak_hz(&mag, nfft, 100.0, 2000.0) / 440.0).log2()
        })
        .collect();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < cents.len() {
        let mut j = i + 1;
        while j < cents.len() && (cents[j] - cents[i]).abs() < 3.0 {
            j += 1;
        }
        if j - i >= 3 {
            runs.push(cents[i..j].iter().sum::<f64>() / (j - i) as f64);
        }
        i = j;
    }
    runs
}

/// Distance of `cents` to the nearest multiple of `step`.
fn off_grid(cents: f64, step: f64) -> f64 {
    let r = cents.rem_euclid(step);
    r.min(step - r)
}

/// Pairwise intervals between distinct steady pitches (> 30 cents apart).
fn intervals(p: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, a) in p.iter().enumerate() {
        for b in &p[i + 1..] {
            if (a - b).abs() > 30.0 {
                out.push((a - b).abs());
            }
        }
    }
    out
}

#[test]
fn same_seed_same_audio_other_seed_other_audio() {
    let c = cfg(7, 2, 1.5, &["makam", "carnatic"]);
    let a = generate(&c).unwrap();
    let b = generate(&c).unwrap();
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.tags, y.tags);
        assert!(x.samples == y.samples, "{} differs between runs", x.name);
    }
    let other = generate(&SynthConfig {
        seed: 8,
        ..c.clone()
    })
    .unwrap();
    for (x, y) in a.iter().zip(&other) {
        let diff = x
            .samples
            .iter()
            .zip(&y.samples)
            .filter(|(p, q)| p != q)
            .count();
        assert!(
            diff > x.samples.len() / 2,
            "{}: seeds 7 and 8 differ in only {diff} samples",
            x.name
        );
    }
    // A clip depends only on (seed, tradition, index), not on what else is generated.
    let alone = generate(&cfg(7, 1, 1.5, &["carnatic"])).unwrap();
    assert!(alone[0].samples == a[2].samples && alone[0].name == "carnatic_000");
}

#[test]
fn shapes_peaks_and_tags() {
    let c = cfg(1, 6, 2.0, &all_traditions());
    let clips = generate(&c).unwrap();
    assert_eq!(clips.len(), 30);
    let vocab = tag_vocabulary();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, clip) in clips.iter().enumerate() {
        let t = all_traditions()[k / 6];
        assert_eq!(clip.tradition, t);
        assert_eq!(clip.name, format!("{t}_{:03}", k % 6));
        assert_eq!(clip.samples.len(), 48000);
        assert!(
            clip.samples.iter().all(|x| x.is_finite()),
            "{} has NaN/inf",
            clip.name
        );
        let peak = clip.samples.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.9).abs() < 1e-6, "{}: peak {peak}", clip.name);
        let rms = (clip.samples.iter().map(|x| x * x).sum::<f32>() / 48000.0).sqrt();
        assert!(rms > 0.03, "{}: rms {rms} (near silence)", clip.name);
        for tag in &clip.tags {
            assert!(
                vocab.contains(tag),
                "{}: tag {tag} not in the vocabulary",
                clip.name
            );
            *seen.entry(tag).or_default() += 1;
        }
        for kind in ["tradition:", "scale:", "meter:", "tempo:"] {
            let n = clip.tags.iter().filter(|x| x.starts_with(kind)).count();
            assert_eq!(n, 1, "{}: {n} {kind} tags in {:?}", clip.name, clip.tags);
        }
        assert!(has(clip, &format!("tradition:{t}")));
        assert!(clip.tags.iter().any(|x| x.starts_with("ornament:")));
        assert!(clip.tags.iter().any(|x| x.starts_with("instrument:")));
        let drone = matches!(t, "hindustani" | "carnatic" | "lyra");
        assert_eq!(has(clip, "drone"), drone, "{}: {:?}", clip.name, clip.tags);
    }
    // Shared tags really are shared across traditions.
    let many = generate(&cfg(3, 16, 0.5, &all_traditions())).unwrap();
    for tag in [
        "meter:9/8",
        "meter:7/8",
        "meter:4/4",
        "meter:free",
        "scale:hicaz",
        "scale:minor",
        "family:bowed",
        "family:plucked",
        "family:flute",
        "ornament:grace",
        "ornament:glide",
        "drone",
        "percussion",
    ] {
        let trads: std::collections::HashSet<&str> = many
            .iter()
            .filter(|c| has(c, tag))
            .map(|c| c.tradition.as_str())
            .collect();
        assert!(trads.len() >= 2, "{tag} occurs only in {trads:?}");
    }
    assert!(
        seen.len() >= 35,
        "only {} distinct tags in 30 clips",
        seen.len()
    );
}

#[test]
fn bad_configs_are_errors() {
    let e = generate(&cfg(0, 1, 1.0, &["western", "polka"])).unwrap_err();
    assert!(format!("{e:#}").contains("polka"), "{e:#}");
    assert!(generate(&cfg(0, 1, 1.0, &["lyra", "lyra"])).is_err());
    assert!(generate(&cfg(0, 1, f32::NAN, &["lyra"])).is_err());
    assert!(generate(&SynthConfig {
        sample_rate: 100,
        ..cfg(0, 1, 1.0, &["lyra"])
    })
    .is_err());
    assert!(generate(&cfg(0, 0, 1.0, &["lyra"])).unwrap().is_empty());
}

/// Makam notes sit on 53-TET steps that 12-TET lacks; western notes sit on the 12-TET grid of A440.
#[test]
fn makam_uses_53_tet_and_western_uses_12_tet() {
    let comma = 1200.0 / 53.0;
    let clips = generate(&cfg(11, 8, 4.0, &["makam", "western"])).unwrap();
    let (mut m_int, mut w_int, mut w_pitch) = (Vec::new(), Vec::new(), Vec::new());
    for c in &clips {
        let p = steady_pitches(&c.samples);
        if c.tradition == "makam" {
            m_int.extend(intervals(&p));
        } else {
            w_int.extend(intervals(&p));
            w_pitch.extend(p);
        }
    }
    let frac = |v: &[f64], f: &dyn Fn(f64) -> bool| {
        v.iter().filter(|&&x| f(x)).count() as f64 / v.len() as f64
    };
    let m_comma = frac(&m_int, &|x| off_grid(x, comma) < 3.0);
    let m_not_tet = frac(&m_int, &|x| off_grid(x, 100.0) > 7.0);
    let w_tet = frac(&w_int, &|x| off_grid(x, 100.0) < 3.0);
    let w_abs = frac(&w_pitch, &|x| off_grid(x, 100.0) < 3.0);
    eprintln!(
        "makam: {} intervals, {m_comma:.3} within 3c of a comma multiple, {m_not_tet:.3} > 7c off 12-TET; \
         western: {} intervals, {w_tet:.3} within 3c of 12-TET, {} pitches, {w_abs:.3} within 3c of A440 grid",
        m_int.len(),
        w_int.len(),
        w_pitch.len()
    );
    assert!(m_int.len() >= 50 && w_int.len() >= 50);
    assert!(m_comma > 0.9, "makam intervals on 53-TET: {m_comma}");
    assert!(m_not_tet > 0.3, "makam intervals off 12-TET: {m_not_tet}");
    assert!(w_tet > 0.9, "western intervals on 12-TET: {w_tet}");
    assert!(w_abs > 0.9, "western pitches on the A440 grid: {w_abs}");
}

/// Speed of the full-size corpus (5 traditions x 40 clips x 5 s); run with --ignored --nocapture.
#[test]
#[ignore]
fn generation_speed() {
    let t0 = Instant::now();
    let clips = generate(&cfg(0, 40, 5.0, &all_traditions())).unwrap();
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "{} clips, {:.0} s of audio in {s:.2} s ({:.0}x real time)",
        clips.len(),
        clips.len() as f64 * 5.0,
        clips.len() as f64 * 5.0 / s
    );
    for t in all_traditions() {
        let t1 = Instant::now();
        generate(&cfg(0, 40, 5.0, &[t])).unwrap();
        eprintln!("  {t}: {:.2} s", t1.elapsed().as_secs_f64());
    }
}

/// Strongest component present in every 0.25 s window: over candidate frequencies (peaks of the
/// long-term spectrum, 60-1000 Hz), the minimum over windows of the share of window power that a
/// Hann-windowed DTFT at that frequency holds (1.0 for a pure sinusoid), maximised over candidates.
/// Returns (share, frequency).
fn persistent_component(x: &[f32]) -> (f64, f64) {
    let nfft = 8192;
    let plan = RealFftPlan::new(nfft);
    let mut ltas = vec![0f64; nfft / 2 + 1];
    for f in 0..(x.len() - nfft) / 4096 {
        for (a, m) in ltas
            .iter_mut()
            .zip(spectrum(&x[f * 4096..f * 4096 + nfft], nfft, &plan))
        {
            *a += m;
        }
    }
    let bin = SR as f64 / nfft as f64;
    let mut cands: Vec<usize> = ((60.0 / bin) as usize..(1000.0 / bin) as usize)
        .filter(|&k| ltas[k] > ltas[k - 1] && ltas[k] >= ltas[k + 1])
        .collect();
    cands.sort_by(|&a, &b| ltas[b].total_cmp(&ltas[a]));
    cands.truncate(12);
    let n = 6000;
    let hann: Vec<f64> = (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        .collect();
    let mut best = (0.0, 0.0);
    for k in cands {
        let f = peak_hz(&ltas, nfft, k as f64 * bin - 1.0, k as f64 * bin + 1.0);
        let w = 2.0 * std::f64::consts::PI * f / SR as f64;
        let mut worst = f64::INFINITY;
        let rot = (w.cos(), -w.sin());
        for win in x.chunks_exact(n) {
            // DTFT at f by a rotating phasor e^{-i w n} (renormalised per window).
            let (mut re, mut im, mut energy) = (0.0, 0.0, 0.0);
            let (mut pr, mut pi) = (1.0f64, 0.0f64);
            for (&s, &h) in win.iter().zip(&hann) {
                let v = s as f64 * h;
                re += v * pr;
                im += v * pi;
                energy += v * v;
                (pr, pi) = (pr * rot.0 - pi * rot.1, pr * rot.1 + pi * rot.0);
            }
            worst = worst.min((re * re + im * im) / (n as f64 / 3.0 * energy));
        }
        if worst > best.0 {
            best = (worst, f);
        }
    }
    best
}

/// Onset times (s) from the spectral flux above 6.5 kHz (frames 256, hop 64): maxima within
/// +-100 ms that exceed 20% of the largest flux.
fn high_band_onsets(x: &[f32]) -> Vec<f64> {
    let (n, hop) = (256, 64);
    let plan = RealFftPlan::new(n);
    let lo = (6500.0 / (SR / n as f32)) as usize;
    let mut prev = vec![0f64; n / 2 + 1];
    let mut flux = Vec::new();
    for f in 0..(x.len() - n) / hop {
        let mag = spectrum(&x[f * hop..f * hop + n], n, &plan);
        flux.push(
            (lo..=n / 2)
                .map(|k| (mag[k] - prev[k]).max(0.0))
                .sum::<f64>(),
        );
        prev = mag;
    }
    let max = flux.iter().cloned().fold(0.0, f64::max);
    let w = (0.1 * SR as f64 / hop as f64) as usize;
    (0..flux.len())
        .filter(|&i| {
            let nb = &flux[i.saturating_sub(w)..(i + w + 1).min(flux.len())];
            flux[i] > 0.2 * max
                && nb.iter().all(|&v| v <= flux[i])
                && nb.iter().position(|&v| v == flux[i]).unwrap() + i.saturating_sub(w) == i
        })
        .map(|i| (i * hop) as f64 / SR as f64)
        .collect()
}

/// True when the inter-onset intervals follow `groups` cyclically (from some phase), each IOI within
/// 4% of `unit * group` where the unit is estimated from the shortest IOIs.
fn follows_groups(ioi: &[f64], groups: &[f64]) -> bool {
    let shortest = ioi.iter().cloned().fold(f64::INFINITY, f64::min);
    let short: Vec<f64> = ioi
        .iter()
        .cloned()
        .filter(|&x| x < 1.2 * shortest)
        .collect();
    let gmin = groups.iter().cloned().fold(f64::INFINITY, f64::min);
    let unit = short.iter().sum::<f64>() / short.len() as f64 / gmin;
    (0..groups.len()).any(|phase| {
        ioi.iter()
            .enumerate()
            .all(|(j, &x)| (x / (unit * groups[(j + phase) % groups.len()]) - 1.0).abs() < 0.04)
    })
}

/// Percussion onsets (the band above 6.5 kHz holds only drums) follow the cycle's grouping:
/// 2+2+2+3 in 9/8 and 3+2+2 in 7/8 (ratio 1.5 between long and short IOIs, at the right places),
/// evenly spaced eighths for the western kit; and the aksak clips do not pass as even.
#[test]
fn percussion_onsets_follow_the_meter() {
    let clips = generate(&cfg(5, 16, 5.0, &["makam", "lyra", "western"])).unwrap();
    let mut checked: HashMap<&str, usize> = HashMap::new();
    for c in clips.iter().filter(|c| has(c, "percussion")) {
        let on = high_band_onsets(&c.samples);
        let ioi: Vec<f64> = on.windows(2).map(|w| w[1] - w[0]).collect();
        let (meter, groups): (&str, &[f64]) = if has(c, "meter:9/8") {
            ("9/8", &[2.0, 2.0, 2.0, 3.0])
        } else if has(c, "meter:7/8") {
            ("7/8", &[3.0, 2.0, 2.0])
        } else if c.tradition == "western" {
            ("even", &[1.0])
        } else {
            continue;
        };
        assert!(ioi.len() >= 4, "{}: only {} onsets", c.name, on.len());
        assert!(
            follows_groups(&ioi, groups),
            "{} ({meter}): IOIs {ioi:.3?}",
            c.name
        );
        if meter != "even" {
            assert!(
                !follows_groups(&ioi, &[1.0]),
                "{}: aksak IOIs look even: {ioi:.3?}",
                c.name
            );
        }
        *checked.entry(meter).or_default() += 1;
    }
    eprintln!("clips checked per meter: {checked:?}");
    for m in ["9/8", "7/8", "even"] {
        assert!(
            checked.get(m).copied().unwrap_or(0) >= 2,
            "too few {m} clips: {checked:?}"
        );
    }
}

/// Clips tagged `drone` hold one fixed frequency in every 0.25 s window; the others do not.
#[test]
fn drone_is_present_throughout() {
    let clips = generate(&cfg(5, 8, 4.0, &all_traditions())).unwrap();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for c in &clips {
        let (share, _) = persistent_component(&c.samples);
        if has(c, "drone") {
            with.push(share);
        } else {
            without.push(share);
        }
    }
    let min_with = with.iter().cloned().fold(f64::INFINITY, f64::min);
    let max_without = without.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "persistent share: drone clips min {min_with:.5} ({}), others max {max_without:.5} ({})",
        with.len(),
        without.len()
    );
    // A chord progression can keep a common tone through a short clip, so a drone-less clip may
    // score well above zero (measured max 0.0014 at seed 5); the typical one scores ~1e-5.
    let mut sorted = without.clone();
    sorted.sort_by(f64::total_cmp);
    let median_without = sorted[sorted.len() / 2];
    assert!(min_with > 0.005, "{with:.4?}");
    assert!(
        min_with > 4.0 * max_without && median_without < 1e-4,
        "{with:.4?} vs {without:.4?}"
    );
}

/// Largest share of a frame's power above 7 kHz: pitched notes are band-limited to 5.5 kHz and
/// breath noise is low-passed, so only clips tagged `percussion` put strokes there.
#[test]
fn only_percussion_reaches_the_high_band() {
    let clips = generate(&cfg(9, 8, 3.0, &all_traditions())).unwrap();
    let nfft = 1024;
    let plan = RealFftPlan::new(nfft);
    let lo = (7000.0 / (SR / nfft as f32)) as usize;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for c in &clips {
        let mut share = 0f64;
        for f in c.samples.chunks_exact(nfft) {
            let mag = spectrum(f, nfft, &plan);
            let all = mag.iter().map(|m| m * m).sum::<f64>();
            share = share.max(mag[lo..].iter().map(|m| m * m).sum::<f64>() / all);
        }
        if has(c, "percussion") {
            with.push(share);
        } else {
            without.push(share);
        }
    }
    let min_with = with.iter().cloned().fold(f64::INFINITY, f64::min);
    let max_without = without.iter().cloned().fold(0.0, f64::max);
    eprintln!("max frame share above 7 kHz: percussion clips min {min_with:.2e} ({}), others max {max_without:.2e} ({})", with.len(), without.len());
    assert!(!with.is_empty() && !without.is_empty());
    assert!(min_with > 100.0 * max_without, "{with:?} vs {without:?}");
}

/// write_corpus: WAV files that read back as the generated samples (to 16-bit rounding), a tags.csv
/// that lists every clip with its tags, and 70/15/15 splits per tradition.
#[test]
fn corpus_round_trip() {
    let dir = std::env::temp_dir().join(format!("culturemert-synth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = cfg(4, 20, 0.5, &["lyra", "makam"]);
    let clips = write_corpus(&dir, &c).unwrap();
    let csv = std::fs::read_to_string(dir.join("tags.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("file,tradition,split,tags"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 40);
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (row, clip) in rows.iter().zip(&clips) {
        assert_eq!(row.len(), 4, "{row:?}");
        assert_eq!(row[0], format!("{}/{}.wav", clip.tradition, clip.name));
        assert_eq!(row[1], clip.tradition);
        assert_eq!(row[3].split(';').collect::<Vec<_>>(), clip.tags);
        *counts
            .entry((row[1].to_string(), row[2].to_string()))
            .or_default() += 1;
        let (ch, rate) = culturemert_raw::audio::wav::read_wav(&dir.join(row[0])).unwrap();
        assert_eq!((ch.len(), rate), (1, 24000));
        let err = ch[0]
            .iter()
            .zip(&clip.samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(ch[0].len(), clip.samples.len());
        assert!(
            err <= 0.5 / 32768.0 + 1e-7,
            "{}: 16-bit round trip error {err}",
            clip.name
        );
    }
    for t in ["lyra", "makam"] {
        let n = |s: &str| {
            counts
                .get(&(t.to_string(), s.to_string()))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!((n("train"), n("valid"), n("test")), (14, 3, 3), "{t}");
        let splits = assign_splits(4, t, 20);
        let from_csv: Vec<&str> = rows.iter().filter(|r| r[1] == t).map(|r| r[2]).collect();
        assert_eq!(splits, from_csv);
    }
    assert_ne!(assign_splits(4, "lyra", 20), assign_splits(5, "lyra", 20));
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The CLI writes a corpus and refuses a non-empty directory unless --force.
#[test]
fn cli_refuses_non_empty_dir_without_force() {
    use culturemert_raw::cli::synth::{run, Args};
    let dir = std::env::temp_dir().join(format!("culturemert-synth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = |force| Args {
        out: dir.clone(),
        seed: 1,
        clips_per_tradition: 2,
        seconds: 0.3,
        sample_rate: 24000,
        traditions: Some(vec!["western".into(), "hindustani".into()]),
        force,
    };
    run(args(false)).unwrap();
    assert!(dir.join("hindustani/hindustani_001.wav").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("tags.csv"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    let e = run(args(false)).unwrap_err();
    assert!(format!("{e:#}").contains("not empty"), "{e:#}");
    run(args(true)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
