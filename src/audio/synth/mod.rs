//! Deterministic synthetic multi-cultural music corpus (the embedded default of `train`, and the
//! probing data of the evaluation).
//!
//! Five "traditions" that differ in tuning system, rhythm cycle, timbre and ornamentation:
//! * `western`: 12-TET major/minor, 4/4 or 3/4, piano/guitar chords, piano/violin/guitar melody, drum kit.
//! * `makam`: 53-TET (Holdrian comma) makam scales, aksak 9/8 = 2+2+2+3, 10/8 or 4/4 usul on a frame
//!   drum, or a free taksim; breathy ney and plucked oud; grace notes.
//! * `hindustani`: just-intonation ragas, tanpura drone, meend glides; teentaal (16), jhaptaal (10),
//!   rupak (3+2+2) with tabla, or a free alap; bansuri or sitar.
//! * `carnatic`: other just-intonation ragas, drone, gamaka oscillations; adi (8), misra chapu (3+2+2),
//!   khanda chapu (5) on mridangam, or a free alapana; violin or veena.
//! * `lyra`: 12-TET folk modes, bowed lyra with an open drone string, laouto, 7/8 = 3+2+2, 2/4, 9/8.
//!
//! Every clip is a pure function of (seed, tradition, clip index): clips do not depend on which
//! other traditions or how many clips are requested.

mod compose;
mod render;
mod traditions;

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use render::{render_note, render_stroke, Bank};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    pub sample_rate: u32,
    pub clip_seconds: f32,
    pub clips_per_tradition: usize,
    /// Names from [`all_traditions`].
    pub traditions: Vec<String>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            sample_rate: 24000,
            clip_seconds: 5.0,
            clips_per_tradition: 24,
            traditions: all_traditions().into_iter().map(String::from).collect(),
        }
    }
}

/// One generated clip: mono samples peak-normalised to 0.9, and its multi-label tags.
#[derive(Clone, Debug)]
pub struct SynthClip {
    pub tradition: String,
    /// `<tradition>_<index>` (index zero-padded to 3 digits).
    pub name: String,
    pub samples: Vec<f32>,
    pub tags: Vec<String>,
}

/// Peak of every clip after normalisation.
pub const PEAK: f32 = 0.9;

pub fn all_traditions() -> Vec<&'static str> {
    vec!["western", "makam", "hindustani", "carnatic", "lyra"]
}

/// Every tag a clip can carry, grouped by kind (`tradition:`, `scale:`, `instrument:`, `family:`,
/// `meter:`, `tempo:`, `ornament:`, then the presence tags `drone` and `percussion`).
pub fn tag_vocabulary() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut add = |kind: &str, value: &str| {
        let t = format!("{kind}:{value}");
        if !v.contains(&t) {
            v.push(t);
        }
    };
    for t in all_traditions() {
        add("tradition", t);
    }
    for t in all_traditions() {
        for s in traditions::scales(t) {
            add("scale", s.name);
        }
    }
    for &i in traditions::INSTRUMENTS {
        add("instrument", i);
    }
    for &f in traditions::FAMILIES {
        add("family", f);
    }
    for &m in traditions::METER_NAMES {
        add("meter", m);
    }
    for t in ["slow", "medium", "fast"] {
        add("tempo", t);
    }
    for &o in traditions::ORNAMENTS {
        add("ornament", o);
    }
    v.push("drone".into());
    v.push("percussion".into());
    v
}

/// The corpus generator: the crate's splitmix64.
pub(crate) use crate::rng::SplitMix64 as Rng;

/// Seed of one clip, mixing the corpus seed, the tradition's fixed index and the clip index.
fn clip_seed(seed: u64, tradition: usize, index: usize) -> u64 {
    let mut r = Rng::new(
        seed ^ ((tradition as u64 + 1) << 56) ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    r.next_u64()
}

fn validate(cfg: &SynthConfig) -> Result<Vec<usize>> {
    ensure!(
        (8000..=192_000).contains(&cfg.sample_rate),
        "synth: sample rate {} Hz is outside 8000..=192000",
        cfg.sample_rate
    );
    ensure!(
        cfg.clip_seconds.is_finite() && cfg.clip_seconds >= 0.1 && cfg.clip_seconds <= 600.0,
        "synth: clip length {} s is outside 0.1..=600",
        cfg.clip_seconds
    );
    let all = all_traditions();
    let mut idx = Vec::new();
    for t in &cfg.traditions {
        let Some(i) = all.iter().position(|a| a == t) else {
            bail!("synth: unknown tradition {t:?} (known: {})", all.join(", "));
        };
        if idx.contains(&i) {
            bail!("synth: tradition {t:?} is listed twice");
        }
        idx.push(i);
    }
    Ok(idx)
}

/// Renders one clip.
fn render_clip(cfg: &SynthConfig, t_index: usize, index: usize, bank: &mut Bank) -> SynthClip {
    let tradition = all_traditions()[t_index];
    let sr = cfg.sample_rate as f32;
    let n = (cfg.clip_seconds * sr).round() as usize;
    let mut rng = Rng::new(clip_seed(cfg.seed, t_index, index));
    let piece = traditions::compose(tradition, &mut rng, index, cfg.clip_seconds);
    let mut buf = vec![0f32; n];
    let mut noise = (rng.next_u64() as u32) | 1;
    for note in &piece.notes {
        render_note(&mut buf, sr, note, bank, &mut noise);
    }
    for st in &piece.strokes {
        render_stroke(&mut buf, sr, st, bank, &mut noise);
    }
    let mean = buf.iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64;
    buf.iter_mut().for_each(|x| *x -= mean as f32);
    let peak = buf.iter().fold(0f32, |m, &x| m.max(x.abs()));
    if peak > 0.0 {
        let g = PEAK / peak;
        buf.iter_mut()
            .for_each(|x| *x = (*x * g).clamp(-PEAK, PEAK));
    }
    SynthClip {
        tradition: tradition.to_string(),
        name: format!("{tradition}_{index:03}"),
        samples: buf,
        tags: piece.tags,
    }
}

/// Generates `clips_per_tradition` clips of each listed tradition, traditions in the listed order.
pub fn generate(cfg: &SynthConfig) -> Result<Vec<SynthClip>> {
    let idx = validate(cfg)?;
    let mut bank = Bank::default();
    let mut out = Vec::with_capacity(idx.len() * cfg.clips_per_tradition);
    for &t in &idx {
        for i in 0..cfg.clips_per_tradition {
            out.push(render_clip(cfg, t, i, &mut bank));
        }
    }
    Ok(out)
}

/// Split of each of `n` clips of one tradition: a seeded shuffle, then the first round(0.7 n) are
/// "train", the next round(0.15 n) "valid", the rest "test".
pub fn assign_splits(seed: u64, tradition: &str, n: usize) -> Vec<&'static str> {
    let name_hash = tradition.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::new(seed ^ name_hash);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_train = (0.7 * n as f64).round() as usize;
    let n_valid = (0.15 * n as f64).round() as usize;
    let mut split = vec!["test"; n];
    for (rank, &i) in order.iter().enumerate() {
        if rank < n_train {
            split[i] = "train";
        } else if rank < n_train + n_valid {
            split[i] = "valid";
        }
    }
    split
}

/// Generates the corpus and writes `<dir>/<tradition>/<name>.wav` (16-bit PCM) and `<dir>/tags.csv`
/// (`file,tradition,split,tags`, tags joined by `;`). Files go to temporary names and are renamed.
pub fn write_corpus(dir: &Path, cfg: &SynthConfig) -> Result<Vec<SynthClip>> {
    let clips = generate(cfg)?;
    let mut csv = String::from("file,tradition,split,tags\n");
    for t in &cfg.traditions {
        let sub = dir.join(t);
        fs::create_dir_all(&sub)
            .with_context(|| format!("creating directory {}", sub.display()))?;
        let mine: Vec<&SynthClip> = clips.iter().filter(|c| &c.tradition == t).collect();
        let splits = assign_splits(cfg.seed, t, mine.len());
        for (c, split) in mine.iter().zip(splits) {
            let path = sub.join(format!("{}.wav", c.name));
            let tmp = sub.join(format!(".{}.wav.tmp", c.name));
            crate::audio::wav::write_wav_i16(&tmp, &c.samples, cfg.sample_rate)?;
            fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            csv.push_str(&format!(
                "{t}/{}.wav,{t},{split},{}\n",
                c.name,
                c.tags.join(";")
            ));
        }
    }
    let path = dir.join("tags.csv");
    let tmp = dir.join(".tags.csv.tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(csv.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(clips)
}
