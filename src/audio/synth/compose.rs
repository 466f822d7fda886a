//! Shared building blocks of the five traditions: scales in cents, rhythm cycles, tempo classes,
//! the melodic random walk, percussion kits and the tagged `Piece` being assembled.

use super::render::{Contour, NoiseBurst, Note, Stroke, Timbre};
use super::Rng;

/// A scale (mode, makam, raga) as cents above the tonic, one octave, ascending.
pub struct Scale {
    pub name: &'static str,
    pub cents: Vec<f32>,
}

/// Holdrian comma: the step of 53-tone equal temperament.
pub const COMMA_CENTS: f32 = 1200.0 / 53.0;

pub fn from_semitones(name: &'static str, semis: &[f32]) -> Scale {
    Scale {
        name,
        cents: semis.iter().map(|s| 100.0 * s).collect(),
    }
}

pub fn from_commas(name: &'static str, commas: &[f32]) -> Scale {
    Scale {
        name,
        cents: commas.iter().map(|c| c * COMMA_CENTS).collect(),
    }
}

/// Just-intonation ratios (n, d) to cents.
pub fn from_ratios(name: &'static str, ratios: &[(f32, f32)]) -> Scale {
    Scale {
        name,
        cents: ratios
            .iter()
            .map(|&(n, d)| 1200.0 * (n / d).log2())
            .collect(),
    }
}

impl Scale {
    /// Cents of scale degree `d` (any integer: negative and >= len wrap into other octaves).
    pub fn degree(&self, d: i32) -> f32 {
        let n = self.cents.len() as i32;
        self.cents[d.rem_euclid(n) as usize] + 1200.0 * d.div_euclid(n) as f32
    }
}

/// A rhythm cycle: groups of counting units (2+2+2+3 for a 9/8 aksak).
#[derive(Clone, Copy)]
pub struct Meter {
    /// The meter tag (without `meter:`).
    pub name: &'static str,
    pub groups: &'static [u32],
    /// Units are eighth notes (twice as fast as beats at the same tempo class).
    pub eighths: bool,
}

impl Meter {
    pub fn units(&self) -> u32 {
        self.groups.iter().sum()
    }

    /// Unit offset of each group start within the cycle.
    pub fn group_starts(&self) -> Vec<u32> {
        let mut acc = 0;
        self.groups
            .iter()
            .map(|g| {
                let s = acc;
                acc += g;
                s
            })
            .collect()
    }
}

pub const FREE: &str = "free";

/// Chooses a tempo class and returns (class tag, seconds per counting unit).
pub fn pick_tempo(rng: &mut Rng, eighths: bool) -> (&'static str, f32) {
    let (class, lo, hi) = [
        ("slow", 60.0, 80.0),
        ("medium", 90.0, 115.0),
        ("fast", 125.0, 150.0),
    ][rng.below(3)];
    let bpm = rng.range(lo, hi) * if eighths { 2.0 } else { 1.0 };
    (class, 60.0 / bpm)
}

/// Tempo class of free-rhythm music, as (class tag, shortest, longest note in seconds).
pub fn pick_free_tempo(rng: &mut Rng) -> (&'static str, f32, f32) {
    [
        ("slow", 0.6, 1.4),
        ("medium", 0.35, 0.8),
        ("fast", 0.2, 0.45),
    ][rng.below(3)]
}

/// One step of the melodic random walk on scale degrees, kept within [lo, hi].
pub fn walk(rng: &mut Rng, deg: i32, lo: i32, hi: i32) -> i32 {
    let steps = [0, 1, -1, 1, -1, 2, -2, 1, -1, 3, -3, 4, -2, 2];
    let next = deg + steps[rng.below(steps.len())];
    if next < lo {
        2 * lo - next
    } else if next > hi {
        2 * hi - next
    } else {
        next
    }
}

/// Splits a group of `units` into note lengths (in units).
pub fn split_group(rng: &mut Rng, units: u32) -> Vec<f32> {
    let opts: &[&[f32]] = match units {
        1 => &[&[1.0], &[1.0], &[0.5, 0.5]],
        2 => &[&[2.0], &[1.0, 1.0], &[1.0, 0.5, 0.5]],
        3 => &[&[3.0], &[2.0, 1.0], &[1.0, 1.0, 1.0], &[1.0, 2.0]],
        4 => &[&[4.0], &[2.0, 2.0], &[1.0, 1.0, 2.0], &[1.0, 1.0, 1.0, 1.0]],
        _ => &[&[1.0]],
    };
    let pick = opts[rng.below(opts.len())];
    if units > 4 {
        vec![1.0; units as usize]
    } else {
        pick.to_vec()
    }
}

/// Rhythmic grid of a metered melody: (onset, length) in seconds for the whole clip.
pub fn metered_rhythm(rng: &mut Rng, meter: &Meter, unit: f32, secs: f32) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < secs {
        for &g in meter.groups {
            for len in split_group(rng, g) {
                out.push((t, len * unit));
                t += len * unit;
            }
        }
    }
    out
}

/// Rhythm of free (unmetered) music: note lengths drawn in [shortest, longest], rare short rests.
pub fn free_rhythm(rng: &mut Rng, shortest: f32, longest: f32, secs: f32) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    let mut t = rng.range(0.0, 0.2);
    while t < secs {
        let len = rng.range(shortest, longest);
        out.push((t, len));
        t += len;
        if rng.chance(0.12) {
            t += rng.range(0.1, 0.4);
        }
    }
    out
}

/// Strokes on every group start of every cycle: `strong` on the cycle start, `weak` elsewhere.
pub fn group_pulse(
    meter: &Meter,
    unit: f32,
    secs: f32,
    mut stroke: impl FnMut(f32, bool) -> Vec<Stroke>,
) -> Vec<Stroke> {
    let mut out = Vec::new();
    let cycle = meter.units() as f32 * unit;
    let mut c0 = 0.0;
    while c0 < secs {
        for (i, s) in meter.group_starts().into_iter().enumerate() {
            let t = c0 + s as f32 * unit;
            if t < secs {
                out.extend(stroke(t, i == 0));
            }
        }
        c0 += cycle;
    }
    out
}

const MEMBRANE: &[(f32, f32)] = &[(1.0, 1.0), (1.59, 0.35), (2.14, 0.2), (2.65, 0.1)];
const SINE: &[(f32, f32)] = &[(1.0, 1.0)];
/// Tabla dayan and mridangam right heads are loaded so their modes are nearly harmonic.
const TUNED_HEAD: &[(f32, f32)] = &[(1.0, 1.0), (2.0, 0.6), (3.0, 0.45), (4.0, 0.3), (5.0, 0.2)];

fn burst(gain: f32, centre_hz: f32, q: f32, decay: f32) -> Option<NoiseBurst> {
    Some(NoiseBurst {
        gain,
        centre_hz,
        q,
        decay,
        highpass: false,
    })
}

fn stroke(start: f32, gain: f32, freq: f32, bend: f32, decay: f32) -> Stroke {
    Stroke {
        start,
        gain,
        freq,
        bend,
        decay,
        partials: MEMBRANE,
        noise: None,
    }
}

/// Frame drum (bendir, def, daouli-like): low "dum" or bright "tek"; both slap the skin.
pub fn frame_drum(t: f32, dum: bool) -> Stroke {
    if dum {
        Stroke {
            noise: burst(0.35, 5000.0, 0.7, 0.015),
            ..stroke(t, 0.9, 75.0, 0.3, 0.3)
        }
    } else {
        Stroke {
            noise: burst(0.45, 6000.0, 0.8, 0.03),
            ..stroke(t, 0.6, 310.0, 0.1, 0.05)
        }
    }
}

pub fn kick(t: f32) -> Stroke {
    Stroke {
        partials: SINE,
        noise: burst(0.2, 1500.0, 1.0, 0.005),
        ..stroke(t, 1.0, 52.0, 2.0, 0.18)
    }
}

pub fn snare(t: f32) -> Stroke {
    Stroke {
        noise: burst(0.6, 3500.0, 0.6, 0.12),
        ..stroke(t, 0.6, 190.0, 0.2, 0.08)
    }
}

pub fn hihat(t: f32, open: bool) -> Stroke {
    Stroke {
        freq: 0.0,
        noise: Some(NoiseBurst {
            gain: 0.35,
            centre_hz: 7000.0,
            q: 0.7,
            decay: if open { 0.12 } else { 0.035 },
            highpass: true,
        }),
        ..stroke(t, 1.0, 0.0, 0.0, 0.0)
    }
}

/// Tabla strokes ("bols"): the dayan rings at the tonic `sa`; the baya gives a gliding bass.
pub fn tabla(t: f32, bol: &str, sa: f32) -> Vec<Stroke> {
    let dayan = |ring: f32, slap: f32| Stroke {
        partials: TUNED_HEAD,
        noise: burst(slap, 6500.0, 1.0, 0.012),
        ..stroke(t, 0.45, 2.0 * sa, 0.0, ring)
    };
    let baya = Stroke {
        bend: 0.6,
        ..stroke(t, 0.9, 95.0, 0.6, 0.35)
    };
    match bol {
        "dha" => vec![dayan(0.25, 0.3), baya],
        "dhin" => vec![dayan(0.45, 0.25), baya],
        "tin" => vec![dayan(0.4, 0.25)],
        _ => vec![dayan(0.1, 0.5)], // "ta" / "na": short and sharp
    }
}

/// Mridangam strokes: "thom" (left-head bass), "nam"/"din" (ringing right head at `sa`), "ta" (dry).
pub fn mridangam(t: f32, stroke_name: &str, sa: f32) -> Stroke {
    let right = |ring: f32, slap: f32, gain: f32| Stroke {
        partials: TUNED_HEAD,
        noise: burst(slap, 6000.0, 0.9, 0.01),
        ..stroke(t, gain, 2.0 * sa, 0.0, ring)
    };
    match stroke_name {
        "thom" => Stroke {
            noise: burst(0.25, 5500.0, 0.8, 0.01),
            ..stroke(t, 0.9, 110.0, 0.15, 0.18)
        },
        "nam" => right(0.22, 0.3, 0.5),
        "din" => right(0.35, 0.2, 0.5),
        _ => right(0.05, 0.6, 0.45),
    }
}

/// A piece under construction: notes, strokes and the tags they justify.
#[derive(Default)]
pub struct Piece {
    pub notes: Vec<Note>,
    pub strokes: Vec<Stroke>,
    pub tags: Vec<String>,
}

impl Piece {
    pub fn tag(&mut self, kind: &str, value: &str) {
        let t = if kind.is_empty() {
            value.to_string()
        } else {
            format!("{kind}:{value}")
        };
        if !self.tags.contains(&t) {
            self.tags.push(t);
        }
    }

    /// Adds a note and tags its instrument and family.
    pub fn note(
        &mut self,
        timbre: Timbre,
        start: f32,
        dur: f32,
        freq: f32,
        gain: f32,
    ) -> &mut Note {
        self.tag("instrument", timbre.name());
        if let Some(f) = timbre.family() {
            self.tag("family", f);
        }
        self.notes.push(Note {
            timbre,
            start,
            dur,
            freq,
            gain,
            contour: Contour::default(),
        });
        self.notes.last_mut().expect("just pushed")
    }

    /// Adds strokes, tagging `percussion` and the drum's instrument name.
    pub fn strokes(&mut self, drum: &str, strokes: Vec<Stroke>) {
        if !strokes.is_empty() {
            self.tag("", "percussion");
            self.tag("instrument", drum);
            self.strokes.extend(strokes);
        }
    }

    /// A tanpura drone on `sa` (strings Pa, Sa, Sa, low Sa plucked in a loop) for the whole clip.
    pub fn tanpura(&mut self, rng: &mut Rng, sa: f32, secs: f32, gain: f32) {
        self.tag("", "drone");
        let strings = [sa * 0.75, sa, sa, sa * 0.5];
        let step = rng.range(0.6, 0.8);
        // The loop starts before the clip, so all four strings already ring at time 0.
        let mut t = -rng.range(4.0 * step, 5.0 * step);
        let mut i = 0;
        while t < secs {
            self.note(Timbre::Tanpura, t, 4.0 * step, strings[i % 4], gain);
            t += step * rng.range(0.95, 1.05);
            i += 1;
        }
    }
}

/// A cosine-shaped glide from `from` cents to 0 over `len` seconds, as contour breakpoints.
pub fn glide_points(from: f32, len: f32) -> Vec<(f32, f32)> {
    (0..=6)
        .map(|i| {
            let u = i as f32 / 6.0;
            (
                u * len,
                from * 0.5 * (1.0 + (std::f32::consts::PI * u).cos()),
            )
        })
        .collect()
}

/// A grace note: start `from` cents away for `hold` seconds, then move to the note in 20 ms.
pub fn grace_points(from: f32, hold: f32) -> Vec<(f32, f32)> {
    vec![(0.0, from), (hold, from), (hold + 0.02, 0.0)]
}

/// Frequency of `cents` above `tonic`.
pub fn hz(tonic: f32, cents: f32) -> f32 {
    tonic * (cents / 1200.0).exp2()
}
