//! Sound production for the synthetic corpus.
//!
//! Pitched instruments are additive: each timbre is a harmonic spectrum baked into a one-cycle
//! wavetable (band-limited per note so no partial passes `HARMONIC_CAP_HZ`), read by a phase
//! accumulator, so pitch glides and oscillations cost one table read per sample. Plucked timbres
//! cross-fade from a bright table to a dull one as they decay. Breath is band-passed noise.
//! Percussion strokes are a few (in)harmonic sine partials with a pitch drop plus filtered noise.

use std::collections::HashMap;
use std::f32::consts::PI;
use std::rc::Rc;

/// Samples per wavetable cycle (plus one guard sample for interpolation).
const TABLE_LEN: usize = 2048;
/// No harmonic of a pitched note goes above this, so the band above ~6 kHz holds only percussion
/// and breath noise (the onset tests and the "percussion" tag rely on it).
pub const HARMONIC_CAP_HZ: f32 = 5500.0;
/// Frequency contours are evaluated every this many samples and interpolated in between.
const CONTROL_BLOCK: usize = 32;

/// The pitched instruments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timbre {
    Piano,
    Guitar,
    Violin,
    Ney,
    Oud,
    Tanpura,
    Bansuri,
    Sitar,
    Veena,
    Lyra,
    Laouto,
}

impl Timbre {
    /// The instrument tag (without the `instrument:` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Timbre::Piano => "piano",
            Timbre::Guitar => "guitar",
            Timbre::Violin => "violin",
            Timbre::Ney => "ney",
            Timbre::Oud => "oud",
            Timbre::Tanpura => "tanpura",
            Timbre::Bansuri => "bansuri",
            Timbre::Sitar => "sitar",
            Timbre::Veena => "veena",
            Timbre::Lyra => "lyra",
            Timbre::Laouto => "laouto",
        }
    }

    /// The instrument family tag shared across traditions (the drone instrument has none).
    pub fn family(self) -> Option<&'static str> {
        match self {
            Timbre::Piano => Some("keyboard"),
            Timbre::Guitar | Timbre::Oud | Timbre::Sitar | Timbre::Veena | Timbre::Laouto => {
                Some("plucked")
            }
            Timbre::Violin | Timbre::Lyra => Some("bowed"),
            Timbre::Ney | Timbre::Bansuri => Some("flute"),
            Timbre::Tanpura => None,
        }
    }
}

/// Envelope and noise settings of a timbre.
struct Spec {
    attack: f32,
    /// Exponential decay time constant of a plucked/struck note; 0 = sustained (bowed, blown).
    decay: f32,
    release: f32,
    /// Time constant of the bright-to-dull cross-fade; 0 = bright table only.
    bright_tau: f32,
    /// Breath-noise level relative to the tone.
    breath: f32,
    max_harm: usize,
}

fn spec(t: Timbre) -> Spec {
    let s = |attack, decay, release, bright_tau, breath, max_harm| Spec {
        attack,
        decay,
        release,
        bright_tau,
        breath,
        max_harm,
    };
    match t {
        Timbre::Piano => s(0.005, 1.2, 0.08, 0.35, 0.0, 30),
        Timbre::Guitar => s(0.005, 0.7, 0.06, 0.15, 0.0, 30),
        Timbre::Oud => s(0.006, 0.45, 0.05, 0.10, 0.0, 24),
        Timbre::Laouto => s(0.005, 0.55, 0.05, 0.12, 0.0, 30),
        Timbre::Sitar => s(0.005, 1.1, 0.08, 0.60, 0.0, 40),
        Timbre::Veena => s(0.006, 1.3, 0.08, 0.45, 0.0, 30),
        Timbre::Tanpura => s(0.010, 3.5, 0.30, 1.50, 0.0, 40),
        Timbre::Violin => s(0.060, 0.0, 0.10, 0.0, 0.0, 30),
        Timbre::Lyra => s(0.040, 0.0, 0.08, 0.0, 0.0, 30),
        Timbre::Ney => s(0.080, 0.0, 0.12, 0.0, 0.35, 8),
        Timbre::Bansuri => s(0.060, 0.0, 0.10, 0.0, 0.15, 8),
    }
}

/// Amplitude of harmonic `h` (1-based) of the bright spectrum.
fn harmonic_amp(t: Timbre, h: usize) -> f32 {
    let hf = h as f32;
    // A string plucked/struck at 1/p of its length has no energy in harmonics that are multiples of p.
    let pluck = |p: f32| (PI * hf / p).sin().abs();
    let bump = |centre: f32, width: f32| (-(hf - centre).powi(2) / width).exp();
    match t {
        Timbre::Piano => (0.25 + 0.75 * pluck(7.3)) / hf.powf(1.1),
        Timbre::Guitar => pluck(5.0) / hf,
        Timbre::Oud => pluck(8.0) / hf.powf(1.2),
        Timbre::Laouto => pluck(6.0) / hf.powf(0.9),
        Timbre::Sitar => (0.3 + pluck(9.5)) / hf.powf(0.6),
        Timbre::Veena => pluck(7.0) / hf.powf(0.9),
        Timbre::Tanpura => (0.4 + pluck(11.0)) / hf.powf(0.5),
        Timbre::Violin => (1.0 + 1.5 * bump(4.0, 4.0) + 0.8 * bump(9.0, 6.0)) / hf,
        // Nasal: a strong formant around harmonics 4-6.
        Timbre::Lyra => (1.0 + 2.5 * bump(5.0, 5.0)) / hf,
        Timbre::Ney => [1.0, 0.22, 0.10, 0.05, 0.03, 0.02, 0.01, 0.01][h - 1],
        Timbre::Bansuri => [1.0, 0.40, 0.18, 0.08, 0.05, 0.03, 0.02, 0.01][h - 1],
    }
}

/// Wavetables built on demand, shared by all notes of a corpus.
pub struct Bank {
    tables: HashMap<(Timbre, bool, usize), Rc<Vec<f32>>>,
    sine: Rc<Vec<f32>>,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            tables: HashMap::new(),
            sine: Rc::new(build_table(&[1.0])),
        }
    }
}

fn build_table(amps: &[f32]) -> Vec<f32> {
    let mut t = vec![0f32; TABLE_LEN + 1];
    for (k, &a) in amps.iter().enumerate() {
        if a == 0.0 {
            continue;
        }
        let w = 2.0 * std::f64::consts::PI * (k + 1) as f64 / TABLE_LEN as f64;
        for (i, v) in t.iter_mut().enumerate() {
            *v += a * (w * i as f64).sin() as f32;
        }
    }
    let peak = t.iter().fold(0f32, |m, &x| m.max(x.abs())).max(1e-9);
    t.iter_mut().for_each(|x| *x /= peak);
    t
}

impl Bank {
    /// The bright (or dull: extra 1/h^1.5 roll-off) table of `t` with `n_harm` harmonics.
    fn table(&mut self, t: Timbre, dull: bool, n_harm: usize) -> Rc<Vec<f32>> {
        self.tables
            .entry((t, dull, n_harm))
            .or_insert_with(|| {
                let amps: Vec<f32> = (1..=n_harm)
                    .map(|h| {
                        let a = harmonic_amp(t, h);
                        if dull {
                            a / (h as f32).powf(1.5)
                        } else {
                            a
                        }
                    })
                    .collect();
                Rc::new(build_table(&amps))
            })
            .clone()
    }
}

#[inline]
fn lookup(table: &[f32], phase: f64) -> f32 {
    let x = phase * TABLE_LEN as f64;
    let i = x as usize;
    let frac = (x - i as f64) as f32;
    table[i] + frac * (table[i + 1] - table[i])
}

/// Zavalishin's topology-preserving state-variable filter: stable up to Nyquist, unlike Chamberlin's.
struct Svf {
    k: f32,
    a1: f32,
    a2: f32,
    a3: f32,
    ic1: f32,
    ic2: f32,
}

impl Svf {
    fn new(centre_hz: f32, q: f32, sr: f32) -> Svf {
        let g = (PI * centre_hz.min(0.45 * sr) / sr).tan();
        let k = 1.0 / q;
        let a1 = 1.0 / (1.0 + g * (g + k));
        Svf {
            k,
            a1,
            a2: g * a1,
            a3: g * g * a1,
            ic1: 0.0,
            ic2: 0.0,
        }
    }

    /// Returns (low-pass, band-pass, high-pass) outputs.
    #[inline]
    fn step(&mut self, x: f32) -> (f32, f32, f32) {
        let v3 = x - self.ic2;
        let v1 = self.a1 * self.ic1 + self.a2 * v3;
        let v2 = self.ic2 + self.a2 * self.ic1 + self.a3 * v3;
        self.ic1 = 2.0 * v1 - self.ic1;
        self.ic2 = 2.0 * v2 - self.ic2;
        (v2, v1, x - self.k * v1 - v2)
    }
}

/// White noise in [-1, 1) from a 32-bit xorshift.
#[inline]
fn white(state: &mut u32) -> f32 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    (x as f32 / u32::MAX as f32) * 2.0 - 1.0
}

/// A sinusoidal pitch oscillation (vibrato, gamaka, trill): `centre + depth * sin(2 pi rate (t - start))`
/// cents from `start` on, faded in over 40 ms.
#[derive(Clone, Copy, Debug)]
pub struct Osc {
    pub start: f32,
    pub rate: f32,
    pub depth: f32,
    pub centre: f32,
}

/// Pitch deviation of a note in cents over time (seconds from the note's start).
#[derive(Clone, Debug, Default)]
pub struct Contour {
    /// Piecewise-linear breakpoints (time, cents), sorted by time; held constant outside.
    pub points: Vec<(f32, f32)>,
    pub osc: Option<Osc>,
}

impl Contour {
    pub fn cents_at(&self, t: f32) -> f32 {
        let mut c = match self.points.iter().position(|&(pt, _)| pt > t) {
            None => self.points.last().map_or(0.0, |p| p.1),
            Some(0) => self.points[0].1,
            Some(i) => {
                let (t0, c0) = self.points[i - 1];
                let (t1, c1) = self.points[i];
                c0 + (c1 - c0) * (t - t0) / (t1 - t0).max(1e-6)
            }
        };
        if let Some(o) = self.osc {
            if t > o.start {
                let u = t - o.start;
                let fade = (u / 0.04).min(1.0);
                c += fade * (o.centre + o.depth * (2.0 * PI * o.rate * u).sin());
            }
        }
        c
    }

    fn max_cents(&self) -> f32 {
        let pts = self.points.iter().fold(0f32, |m, p| m.max(p.1));
        pts + self.osc.map_or(0.0, |o| o.centre + o.depth.abs())
    }
}

/// One pitched note.
#[derive(Clone, Debug)]
pub struct Note {
    pub timbre: Timbre,
    /// Onset in seconds from the clip start.
    pub start: f32,
    /// Gate length in seconds (a plucked note may die out earlier).
    pub dur: f32,
    /// Base frequency in Hz; the contour deviates from it.
    pub freq: f32,
    pub gain: f32,
    pub contour: Contour,
}

/// Adds `note` into `buf`.
pub fn render_note(buf: &mut [f32], sr: f32, note: &Note, bank: &mut Bank, noise: &mut u32) {
    let sp = spec(note.timbre);
    // A note may start before the clip (a drone already ringing): its first `skip` samples are
    // not rendered.
    let start_i = (note.start * sr).round() as i64;
    if start_i >= buf.len() as i64 || note.freq <= 0.0 {
        return;
    }
    let skip = (-start_i).max(0) as usize;
    let start = start_i.max(0) as usize;
    let ring = if sp.decay > 0.0 {
        note.dur.min(5.0 * sp.decay)
    } else {
        note.dur
    }
    .max(0.01);
    let total = ring + sp.release;
    let len = ((total * sr) as usize).min(buf.len() - start + skip);
    if len <= skip {
        return;
    }
    let f_max = note.freq * (note.contour.max_cents() / 1200.0).exp2();
    let cap = HARMONIC_CAP_HZ.min(0.45 * sr);
    let n_harm = ((cap / f_max) as usize).clamp(1, sp.max_harm);
    let bright = bank.table(note.timbre, false, n_harm);
    let dull = bank.table(note.timbre, true, n_harm);
    let decay_step = if sp.decay > 0.0 {
        (-1.0 / (sp.decay * sr)).exp()
    } else {
        1.0
    };
    let bright_step = if sp.bright_tau > 0.0 {
        (-1.0 / (sp.bright_tau * sr)).exp()
    } else {
        1.0
    };
    // Breath: band-pass around the 3rd harmonic, then two low-passes (-24 dB/octave) so it stays below ~4 kHz.
    let mut breath_band = Svf::new((3.0 * note.freq).min(2500.0), 1.2, sr);
    let mut breath_low = Svf::new(2500.0, 0.7, sr);
    let mut breath_low2 = Svf::new(2500.0, 0.7, sr);
    // Samples before the clip are skipped with the envelopes advanced in closed form.
    let mut decay = decay_step.powf(skip as f32);
    let mut w_bright = bright_step.powf(skip as f32);
    let mut phase = 0f64;
    let out = &mut buf[start..start + len - skip];
    let mut k0 = skip;
    while k0 < len {
        let k1 = (k0 + CONTROL_BLOCK).min(len);
        let inc_at = |k: usize| {
            let c = note.contour.cents_at(k as f32 / sr);
            (note.freq * (c / 1200.0).exp2() / sr) as f64
        };
        let (inc0, inc1) = (inc_at(k0), inc_at(k0 + CONTROL_BLOCK));
        for j in 0..k1 - k0 {
            let k = k0 + j;
            let t = k as f32 / sr;
            phase += inc0 + (inc1 - inc0) * j as f64 / CONTROL_BLOCK as f64;
            phase -= phase.floor();
            let mut env = decay * (t / sp.attack).min(1.0);
            if t > ring {
                env *= (1.0 - (t - ring) / sp.release).max(0.0);
            }
            let mut s = lookup(&bright, phase);
            if sp.bright_tau > 0.0 {
                s = w_bright * s + (1.0 - w_bright) * lookup(&dull, phase);
                w_bright *= bright_step;
            }
            if sp.breath > 0.0 {
                let band = breath_band.step(white(noise)).1;
                let low = breath_low.step(band).0;
                s += sp.breath * 4.0 * breath_low2.step(low).0;
            }
            out[k - skip] += note.gain * env * s;
            decay *= decay_step;
        }
        k0 = k1;
    }
}

/// Noise component of a stroke.
#[derive(Clone, Copy, Debug)]
pub struct NoiseBurst {
    pub gain: f32,
    pub centre_hz: f32,
    pub q: f32,
    pub decay: f32,
    /// High-pass instead of band-pass (cymbals).
    pub highpass: bool,
}

/// One percussion stroke.
#[derive(Clone, Debug)]
pub struct Stroke {
    pub start: f32,
    pub gain: f32,
    /// Frequency of the first partial in Hz (0 = noise only).
    pub freq: f32,
    /// Initial pitch excess as a ratio (`freq * (1 + bend)` at the hit), dying in 30 ms.
    pub bend: f32,
    pub decay: f32,
    /// (frequency ratio, amplitude) of the tonal partials.
    pub partials: &'static [(f32, f32)],
    pub noise: Option<NoiseBurst>,
}

/// Adds `stroke` into `buf`: the tonal partials for 5 decay times, the noise for 5 of its own.
pub fn render_stroke(buf: &mut [f32], sr: f32, st: &Stroke, bank: &Bank, noise: &mut u32) {
    let start = (st.start * sr).round().max(0.0) as usize;
    if start >= buf.len() {
        return;
    }
    let out = &mut buf[start..];
    // 1 ms attack ramp, so no click wider than the noise burst itself.
    let ramp = |k: usize| (k as f32 / (0.001 * sr)).min(1.0);
    if st.freq > 0.0 {
        let len = ((5.0 * st.decay * sr) as usize).min(out.len());
        let mut phases = [0f64; 8];
        let tone_step = (-1.0 / (st.decay.max(1e-4) * sr)).exp();
        let bend_step = (-1.0 / (0.03 * sr)).exp();
        let (mut env, mut bend) = (st.gain, st.bend);
        for (k, y) in out[..len].iter_mut().enumerate() {
            let f = st.freq * (1.0 + bend) / sr;
            let mut s = 0.0;
            for (ph, &(ratio, amp)) in phases.iter_mut().zip(st.partials) {
                *ph += (f * ratio) as f64;
                *ph -= ph.floor();
                s += amp * lookup(&bank.sine, *ph);
            }
            *y += env * ramp(k) * s;
            env *= tone_step;
            bend *= bend_step;
        }
    }
    if let Some(n) = st.noise {
        let len = ((5.0 * n.decay * sr) as usize).min(out.len());
        let mut filt = Svf::new(n.centre_hz, n.q, sr);
        let step = (-1.0 / (n.decay.max(1e-4) * sr)).exp();
        let mut env = st.gain * n.gain;
        for (k, y) in out[..len].iter_mut().enumerate() {
            let (_, bp, hp) = filt.step(white(noise));
            *y += env * ramp(k) * if n.highpass { hp } else { 3.0 * bp };
            env *= step;
        }
    }
}
