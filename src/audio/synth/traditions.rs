//! The five traditions: which scales, cycles, instruments and ornaments each one draws from.
//! `variant` (the clip index) picks the scale round-robin so every scale is equally common.

use super::compose::*;
use super::render::{Osc, Timbre};
use super::Rng;

/// Scale names per tradition, in the order `variant` cycles through them.
pub fn scales(tradition: &str) -> Vec<Scale> {
    match tradition {
        "western" => vec![
            from_semitones("major", &[0., 2., 4., 5., 7., 9., 11.]),
            from_semitones("minor", &[0., 2., 3., 5., 7., 8., 10.]),
        ],
        // 53-TET in Holdrian commas (Arel-Ezgi-Uzdilek style approximations).
        "makam" => vec![
            from_commas("rast", &[0., 9., 17., 22., 31., 40., 48.]),
            from_commas("ussak", &[0., 8., 13., 22., 31., 35., 44.]),
            from_commas("hicaz", &[0., 5., 17., 22., 31., 35., 44.]),
            from_commas("kurdi", &[0., 4., 13., 22., 31., 35., 44.]),
        ],
        "hindustani" => vec![
            from_ratios("yaman", &JI_YAMAN),
            from_ratios("bhairav", &JI_BHAIRAV),
            from_ratios("kafi", &JI_KAFI),
        ],
        "carnatic" => vec![
            from_ratios("shankarabharanam", &JI_SHANKARABHARANAM),
            from_ratios("todi", &JI_TODI),
            from_ratios("kalyani", &JI_KALYANI),
            from_ratios("mayamalavagowla", &JI_BHAIRAV),
        ],
        // Greek/Cretan modes in 12-TET; "hicaz" (hitzaz) and "minor" are shared names on purpose.
        "lyra" => vec![
            from_semitones("dorian", &[0., 2., 3., 5., 7., 9., 10.]),
            from_semitones("minor", &[0., 2., 3., 5., 7., 8., 10.]),
            from_semitones("hicaz", &[0., 1., 4., 5., 7., 8., 10.]),
            from_semitones("mixolydian", &[0., 2., 4., 5., 7., 9., 10.]),
        ],
        _ => Vec::new(),
    }
}

const JI_YAMAN: [(f32, f32); 7] = [
    (1., 1.),
    (9., 8.),
    (5., 4.),
    (45., 32.),
    (3., 2.),
    (27., 16.),
    (15., 8.),
];
const JI_BHAIRAV: [(f32, f32); 7] = [
    (1., 1.),
    (16., 15.),
    (5., 4.),
    (4., 3.),
    (3., 2.),
    (8., 5.),
    (15., 8.),
];
const JI_KAFI: [(f32, f32); 7] = [
    (1., 1.),
    (9., 8.),
    (6., 5.),
    (4., 3.),
    (3., 2.),
    (5., 3.),
    (9., 5.),
];
const JI_SHANKARABHARANAM: [(f32, f32); 7] = [
    (1., 1.),
    (9., 8.),
    (5., 4.),
    (4., 3.),
    (3., 2.),
    (5., 3.),
    (15., 8.),
];
const JI_TODI: [(f32, f32); 7] = [
    (1., 1.),
    (16., 15.),
    (6., 5.),
    (4., 3.),
    (3., 2.),
    (8., 5.),
    (9., 5.),
];
const JI_KALYANI: [(f32, f32); 7] = [
    (1., 1.),
    (9., 8.),
    (5., 4.),
    (45., 32.),
    (3., 2.),
    (5., 3.),
    (15., 8.),
];

const M44: Meter = Meter {
    name: "4/4",
    groups: &[1, 1, 1, 1],
    eighths: false,
};
const M34: Meter = Meter {
    name: "3/4",
    groups: &[1, 1, 1],
    eighths: false,
};
const M24: Meter = Meter {
    name: "2/4",
    groups: &[1, 1],
    eighths: false,
};
const AKSAK9: Meter = Meter {
    name: "9/8",
    groups: &[2, 2, 2, 3],
    eighths: true,
};
const AKSAK10: Meter = Meter {
    name: "10/8",
    groups: &[3, 2, 2, 3],
    eighths: true,
};
const SEVEN8: Meter = Meter {
    name: "7/8",
    groups: &[3, 2, 2],
    eighths: true,
};
/// Rupak (Hindustani) and misra chapu (Carnatic) are 3+2+2 cycles of beats: tagged "7/8" with lyra.
const SEVEN_BEATS: Meter = Meter {
    name: "7/8",
    groups: &[3, 2, 2],
    eighths: false,
};
const TEENTAAL: Meter = Meter {
    name: "16-beat",
    groups: &[4, 4, 4, 4],
    eighths: false,
};
const JHAPTAAL: Meter = Meter {
    name: "10-beat",
    groups: &[2, 3, 2, 3],
    eighths: false,
};
const ADI: Meter = Meter {
    name: "8-beat",
    groups: &[4, 2, 2],
    eighths: false,
};
const KHANDA: Meter = Meter {
    name: "5-beat",
    groups: &[2, 3],
    eighths: false,
};

/// Every meter tag value that can occur.
pub const METER_NAMES: &[&str] = &[
    "4/4", "3/4", "2/4", "9/8", "10/8", "7/8", "16-beat", "10-beat", "8-beat", "5-beat", FREE,
];

/// Every instrument name that can occur (pitched and percussion).
pub const INSTRUMENTS: &[&str] = &[
    "piano",
    "guitar",
    "violin",
    "drums",
    "ney",
    "oud",
    "frame_drum",
    "tanpura",
    "bansuri",
    "sitar",
    "tabla",
    "veena",
    "mridangam",
    "lyra",
    "laouto",
];

pub const FAMILIES: &[&str] = &["keyboard", "plucked", "bowed", "flute"];

pub const ORNAMENTS: &[&str] = &["none", "vibrato", "grace", "glide", "oscillation", "trill"];

/// Composes one clip of `tradition` (a name from `all_traditions`).
pub fn compose(tradition: &str, rng: &mut Rng, variant: usize, secs: f32) -> Piece {
    let mut scales = scales(tradition);
    let scale = scales.swap_remove(variant % scales.len());
    let mut p = Piece::default();
    p.tag("tradition", tradition);
    p.tag("scale", scale.name);
    match tradition {
        "western" => western(&mut p, rng, &scale, secs),
        "makam" => makam(&mut p, rng, &scale, secs),
        "hindustani" => hindustani(&mut p, rng, &scale, secs),
        "carnatic" => carnatic(&mut p, rng, &scale, secs),
        _ => lyra(&mut p, rng, &scale, secs),
    }
    p
}

/// 12-TET tonic between `lo` and `hi` semitones relative to A4 (440 Hz).
fn tet_tonic(rng: &mut Rng, lo: i32, hi: i32) -> f32 {
    440.0 * ((lo + rng.below((hi - lo + 1) as usize) as i32) as f32 / 12.0).exp2()
}

/// Tags the ornaments used, or `ornament:none`.
fn tag_ornaments(p: &mut Piece, used: &[(bool, &str)]) {
    for &(u, name) in used {
        if u {
            p.tag("ornament", name);
        }
    }
    if !used.iter().any(|u| u.0) {
        p.tag("ornament", "none");
    }
}

fn metered_tempo(p: &mut Piece, rng: &mut Rng, meter: &Meter) -> f32 {
    let (class, unit) = pick_tempo(rng, meter.eighths);
    p.tag("meter", meter.name);
    p.tag("tempo", class);
    unit
}

fn free_tempo(p: &mut Piece, rng: &mut Rng, secs: f32) -> Vec<(f32, f32)> {
    let (class, lo, hi) = pick_free_tempo(rng);
    p.tag("meter", FREE);
    p.tag("tempo", class);
    free_rhythm(rng, lo, hi, secs)
}

/// Piano or guitar chords under a piano, violin or guitar melody, with an optional drum kit.
fn western(p: &mut Piece, rng: &mut Rng, scale: &Scale, secs: f32) {
    let root = tet_tonic(rng, -21, -10); // C3 .. B3
    let meter = if rng.chance(0.6) { M44 } else { M34 };
    let unit = metered_tempo(p, rng, &meter);
    let bar = unit * meter.units() as f32;
    let progressions: [[i32; 4]; 3] = [[0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3]];
    let prog = progressions[rng.below(3)];
    let comp = if rng.chance(0.5) {
        Timbre::Piano
    } else {
        Timbre::Guitar
    };
    let lead = [Timbre::Piano, Timbre::Violin, Timbre::Guitar][rng.below(3)];
    let (mut t, mut bar_i) = (0.0, 0);
    while t < secs {
        let chord = prog[bar_i % 4];
        let tones: Vec<f32> = (0..3)
            .map(|k| hz(root, scale.degree(chord + 2 * k)))
            .collect();
        if comp == Timbre::Piano {
            for &f in &tones {
                p.note(comp, t, bar, f, 0.22);
            }
        } else {
            for b in 0..meter.units() {
                let f = tones[b as usize % 3];
                p.note(comp, t + b as f32 * unit, unit, f, 0.25);
            }
        }
        t += bar;
        bar_i += 1;
    }
    let mut deg = 7 + 2 * rng.below(2) as i32;
    for (on, len) in metered_rhythm(rng, &meter, unit, secs) {
        deg = walk(rng, deg, 5, 14);
        let n = p.note(lead, on, len * 0.95, hz(root, scale.degree(deg)), 0.6);
        if lead == Timbre::Violin && len > 0.3 {
            n.contour.osc = Some(Osc {
                start: 0.15,
                rate: 5.5,
                depth: 12.0,
                centre: 0.0,
            });
        }
    }
    tag_ornaments(p, &[(lead == Timbre::Violin, "vibrato")]);
    if rng.chance(0.6) {
        let mut kit = Vec::new();
        let n_units = (secs / unit).ceil() as u32 + 1;
        for u in 0..n_units {
            let t = u as f32 * unit;
            let beat = u % meter.units();
            if beat == 0 || (meter.units() == 4 && beat == 2) {
                kit.push(kick(t));
            } else {
                kit.push(snare(t));
            }
            kit.push(hihat(t, false));
            kit.push(hihat(t + unit / 2.0, false));
        }
        kit.retain(|s| s.start < secs);
        p.strokes("drums", kit);
    }
}

/// Ney or oud (sometimes both, in heterophony) in a 53-TET makam: an unmetered taksim or an usul
/// (aksak 9/8, aksak semai 10/8, sofyan 4/4) on the frame drum; grace notes from the neighbour above.
fn makam(p: &mut Piece, rng: &mut Rng, scale: &Scale, secs: f32) {
    let tonic = tet_tonic(rng, -14, -7); // G3 .. D4
    let lead = if rng.chance(0.5) {
        Timbre::Ney
    } else {
        Timbre::Oud
    };
    let lead_octave = if lead == Timbre::Ney { 2.0 } else { 1.0 };
    let double = lead == Timbre::Ney && rng.chance(0.4);
    let taksim = rng.chance(0.3);
    let rhythm = if taksim {
        free_tempo(p, rng, secs)
    } else {
        let meter = [AKSAK9, AKSAK10, M44][rng.below(3)];
        let unit = metered_tempo(p, rng, &meter);
        p.strokes(
            "frame_drum",
            group_pulse(&meter, unit, secs, |t, strong| vec![frame_drum(t, strong)]),
        );
        metered_rhythm(rng, &meter, unit, secs)
    };
    let mut deg = rng.below(3) as i32;
    let mut graced = false;
    for (i, (on, len)) in rhythm.into_iter().enumerate() {
        deg = walk(rng, deg, -2, 9);
        let cents = scale.degree(deg);
        let f = hz(tonic * lead_octave, cents);
        let n = p.note(lead, on, len * 0.97, f, 0.7);
        if len > 0.25 && (rng.chance(0.35) || (!graced && i > 0)) {
            n.contour.points = grace_points(scale.degree(deg + 1) - cents, 0.05);
            graced = true;
        }
        if double {
            p.note(Timbre::Oud, on, len, hz(tonic, cents), 0.4);
        }
    }
    tag_ornaments(p, &[(graced, "grace")]);
}

/// Bansuri or sitar over a tanpura drone, notes joined by meend (slow continuous glides); an alap
/// without tabla, or a taal (teentaal 16, jhaptaal 10, rupak 7) with tabla theka strokes.
fn hindustani(p: &mut Piece, rng: &mut Rng, scale: &Scale, secs: f32) {
    let sa = rng.range(125.0, 165.0);
    p.tanpura(rng, sa, secs, 0.4);
    let lead = if rng.chance(0.5) {
        Timbre::Bansuri
    } else {
        Timbre::Sitar
    };
    let rhythm = if rng.chance(0.3) {
        free_tempo(p, rng, secs)
    } else {
        let meter = [TEENTAAL, JHAPTAAL, SEVEN_BEATS][rng.below(3)];
        let unit = metered_tempo(p, rng, &meter);
        let theka: &[&str] = match meter.name {
            "16-beat" => &[
                "dha", "dhin", "dhin", "dha", "dha", "dhin", "dhin", "dha", "dha", "tin", "tin",
                "ta", "ta", "dhin", "dhin", "dha",
            ],
            "10-beat" => &[
                "dhi", "na", "dhi", "dhi", "na", "ti", "na", "dhi", "dhi", "na",
            ],
            _ => &["tin", "tin", "na", "dhi", "na", "dhi", "na"],
        };
        let mut strokes = Vec::new();
        let mut u = 0usize;
        while (u as f32) * unit < secs {
            let bol = match theka[u % theka.len()] {
                "dhi" => "dhin",
                "ti" => "tin",
                b => b,
            };
            strokes.extend(tabla(u as f32 * unit, bol, sa));
            u += 1;
        }
        p.strokes("tabla", strokes);
        metered_rhythm(rng, &meter, unit, secs)
    };
    let mut deg = rng.below(5) as i32;
    let mut prev = scale.degree(deg);
    let mut glided = false;
    for (on, len) in rhythm {
        deg = walk(rng, deg, -3, 9);
        let cents = scale.degree(deg);
        let n = p.note(lead, on, len, hz(2.0 * sa, cents), 0.7);
        if prev != cents && len > 0.2 && (rng.chance(0.55) || !glided) {
            n.contour.points = glide_points(prev - cents, (0.45 * len).min(0.4));
            glided = true;
        }
        prev = cents;
    }
    tag_ornaments(p, &[(glided, "glide")]);
}

/// Violin or veena over a tanpura (sruti) drone with gamakas (fast oscillations towards the upper
/// note) and some slides; an alapana without percussion or a tala (adi 8, misra chapu 7, khanda
/// chapu 5) on the mridangam.
fn carnatic(p: &mut Piece, rng: &mut Rng, scale: &Scale, secs: f32) {
    let sa = rng.range(130.0, 175.0);
    p.tanpura(rng, sa, secs, 0.4);
    let lead = if rng.chance(0.5) {
        Timbre::Violin
    } else {
        Timbre::Veena
    };
    let rhythm = if rng.chance(0.25) {
        free_tempo(p, rng, secs)
    } else {
        let meter = [ADI, SEVEN_BEATS, KHANDA][rng.below(3)];
        let unit = metered_tempo(p, rng, &meter);
        let starts = meter.group_starts();
        let mut strokes = Vec::new();
        let mut h = 0u32; // half-beat counter
        while h as f32 * unit * 0.5 < secs {
            let t = h as f32 * unit * 0.5;
            let beat = (h / 2) % meter.units();
            let name = if h % 2 == 1 {
                "ta"
            } else if starts.contains(&beat) {
                "thom"
            } else if beat.is_multiple_of(2) {
                "nam"
            } else {
                "din"
            };
            strokes.push(mridangam(t, name, sa));
            if name == "thom" && beat == 0 {
                strokes.push(mridangam(t, "din", sa));
            }
            h += 1;
        }
        p.strokes("mridangam", strokes);
        metered_rhythm(rng, &meter, unit, secs)
    };
    let mut deg = rng.below(5) as i32;
    let mut prev = scale.degree(deg);
    let (mut gamaka, mut slid) = (false, false);
    for (on, len) in rhythm {
        deg = walk(rng, deg, -3, 9);
        let cents = scale.degree(deg);
        let up = scale.degree(deg + 1) - cents;
        let n = p.note(lead, on, len, hz(2.0 * sa, cents), 0.7);
        if len > 0.2 && (rng.chance(0.6) || !gamaka) {
            let depth = 0.5 * up * rng.range(0.6, 1.0);
            n.contour.osc = Some(Osc {
                start: 0.3 * len.min(0.5),
                rate: rng.range(5.5, 8.0),
                depth,
                centre: depth,
            });
            gamaka = true;
        } else if prev != cents && rng.chance(0.4) {
            n.contour.points = glide_points(prev - cents, (0.4 * len).min(0.15));
            slid = true;
        }
        prev = cents;
    }
    tag_ornaments(p, &[(gamaka, "oscillation"), (slid, "glide")]);
}

/// Cretan-style lyra (bowed, with its open drone string sounding the tonic) and laouto strums on the
/// group starts; kalamatianos 7/8, syrtos 2/4 or karsilamas 9/8; trills and grace notes.
fn lyra(p: &mut Piece, rng: &mut Rng, scale: &Scale, secs: f32) {
    let tonic = tet_tonic(rng, -9, -2); // C4 .. G4
    let meter = [SEVEN8, M24, AKSAK9][rng.below(3)];
    let unit = metered_tempo(p, rng, &meter);
    p.tag("", "drone");
    p.note(Timbre::Lyra, 0.0, secs, tonic / 2.0, 0.35);
    if rng.chance(0.7) {
        let cycle = meter.units() as f32 * unit;
        let mut c0 = 0.0;
        while c0 < secs {
            for (i, s) in meter.group_starts().into_iter().enumerate() {
                let t = c0 + s as f32 * unit;
                let f = if i == 0 {
                    tonic / 4.0
                } else {
                    hz(tonic / 4.0, 700.0)
                };
                p.note(Timbre::Laouto, t, meter.groups[i] as f32 * unit, f, 0.35);
                p.note(
                    Timbre::Laouto,
                    t,
                    meter.groups[i] as f32 * unit,
                    2.0 * f,
                    0.2,
                );
            }
            c0 += cycle;
        }
    }
    if rng.chance(0.4) {
        p.strokes(
            "frame_drum",
            group_pulse(&meter, unit, secs, |t, strong| vec![frame_drum(t, strong)]),
        );
    }
    let mut deg = rng.below(4) as i32;
    let (mut trilled, mut graced) = (false, false);
    for (on, len) in metered_rhythm(rng, &meter, unit, secs) {
        deg = walk(rng, deg, 0, 10);
        let cents = scale.degree(deg);
        let up = scale.degree(deg + 1) - cents;
        let n = p.note(Timbre::Lyra, on, len * 0.95, hz(tonic, cents), 0.7);
        if len > 0.3 && (rng.chance(0.2) || !trilled) {
            n.contour.osc = Some(Osc {
                start: 0.0,
                rate: rng.range(10.0, 13.0),
                depth: 0.5 * up,
                centre: 0.5 * up,
            });
            trilled = true;
        } else if len > 0.2 && rng.chance(0.3) {
            n.contour.points = grace_points(up, 0.04);
            graced = true;
        }
    }
    tag_ornaments(p, &[(trilled, "trill"), (graced, "grace")]);
}
