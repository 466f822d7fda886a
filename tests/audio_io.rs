//! WAV input/output: round trips for every encoding and channel count, integer scaling checked
//! against hand-built byte streams, channel mixdown, and the errors a user can provoke.

use std::path::{Path, PathBuf};

use culturemert_raw::audio::wav::{
    load_mono, mix_to_mono, read_audio, read_wav, write_wav, write_wav_f32, write_wav_i16,
    WavSampleFormat,
};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmr-audio-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A RIFF/WAVE file made by hand: PCM (tag 1) or IEEE float (tag 3).
fn wav_bytes(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn write_bytes(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Values on the format's integer grid, covering both full-scale ends, so round trips are exact.
fn grid_signal(bits: u32, n: usize, seed: usize) -> Vec<f32> {
    let full = (1i64 << (bits - 1)) as f64;
    (0..n)
        .map(|i| {
            let k = match i % 5 {
                0 => -full,
                1 => full - 1.0,
                _ => ((i * 7919 + seed * 104729) as f64 % (2.0 * full)) - full,
            };
            (k / full) as f32
        })
        .collect()
}

#[test]
fn round_trip_every_format_and_channel_count() {
    let formats = [
        (WavSampleFormat::Int8, 8),
        (WavSampleFormat::Int16, 16),
        (WavSampleFormat::Int24, 24),
        (WavSampleFormat::Int32, 32),
        (WavSampleFormat::Float32, 24),
    ];
    for (fmt, grid_bits) in formats {
        for n_ch in [1usize, 2, 3, 6] {
            let chans: Vec<Vec<f32>> = (0..n_ch).map(|c| grid_signal(grid_bits, 37, c)).collect();
            let p = tmp(&format!("rt-{fmt:?}-{n_ch}.wav"));
            write_wav(&p, &chans, 22050, fmt).unwrap();
            let (back, rate) = read_wav(&p).unwrap();
            assert_eq!(rate, 22050);
            assert_eq!(back, chans, "{fmt:?} with {n_ch} channels");
        }
    }
}

#[test]
fn mono_writers_round_trip() {
    let x: Vec<f32> = (0..101).map(|i| ((i as f32) * 0.37).sin() * 0.9).collect();
    let p = tmp("mono-f32.wav");
    write_wav_f32(&p, &x, 24000).unwrap();
    assert_eq!(read_wav(&p).unwrap(), (vec![x.clone()], 24000));
    let p = tmp("mono-i16.wav");
    write_wav_i16(&p, &x, 16000).unwrap();
    let (back, rate) = read_wav(&p).unwrap();
    assert_eq!(rate, 16000);
    // Quantisation to 1/32768 steps: error at most half a step.
    let err = back[0]
        .iter()
        .zip(&x)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 0.5 / 32768.0 + 1e-9, "max error {err}");
}

#[test]
fn integer_scaling_matches_soundfile_convention() {
    // 16-bit: -32768, 32767, 1, -1 -> x / 32768.
    let data: Vec<u8> = [-32768i16, 32767, 1, -1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes("hand16.wav", &wav_bytes(1, 1, 8000, 16, &data));
    let (c, _) = read_wav(&p).unwrap();
    assert_eq!(
        c[0],
        vec![-1.0, 32767.0 / 32768.0, 1.0 / 32768.0, -1.0 / 32768.0]
    );
    // 8-bit is unsigned with offset 128: bytes 0, 128, 255 -> -1, 0, 127/128.
    let p = write_bytes("hand8.wav", &wav_bytes(1, 1, 8000, 8, &[0, 128, 255]));
    assert_eq!(read_wav(&p).unwrap().0[0], vec![-1.0, 0.0, 127.0 / 128.0]);
    // 24-bit little-endian: 0x800000 (min), 0x7fffff (max), 0x000001.
    let data = [0x00, 0x00, 0x80, 0xff, 0xff, 0x7f, 0x01, 0x00, 0x00];
    let p = write_bytes("hand24.wav", &wav_bytes(1, 1, 8000, 24, &data));
    let want = vec![-1.0, 8388607.0 / 8388608.0, 1.0 / 8388608.0];
    assert_eq!(read_wav(&p).unwrap().0[0], want);
    // 32-bit int: i32::MIN, 2^16.
    let data: Vec<u8> = [i32::MIN, 1 << 16]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes("hand32.wav", &wav_bytes(1, 1, 8000, 32, &data));
    assert_eq!(read_wav(&p).unwrap().0[0], vec![-1.0, 1.0 / 32768.0]);
    // Stereo interleaving: frames (L, R) = (1, 2), (3, 4) in int16 units.
    let data: Vec<u8> = [1i16, 2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes("hand-stereo.wav", &wav_bytes(1, 2, 8000, 16, &data));
    let s = 1.0 / 32768.0;
    assert_eq!(
        read_wav(&p).unwrap().0,
        vec![vec![s, 3.0 * s], vec![2.0 * s, 4.0 * s]]
    );
}

#[test]
fn mixdown_is_channel_mean() {
    let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.1).sin()).collect();
    let r: Vec<f32> = (0..50).map(|i| (i as f32 * 0.23).cos() * 0.5).collect();
    let c: Vec<f32> = (0..50).map(|i| i as f32 / 64.0 - 0.4).collect();
    let p = tmp("mix3.wav");
    write_wav(
        &p,
        &[l.clone(), r.clone(), c.clone()],
        24000,
        WavSampleFormat::Float32,
    )
    .unwrap();
    let mono = load_mono(&p, 24000).unwrap();
    assert_eq!(mono.len(), 50);
    for i in 0..50 {
        let want = (l[i] + r[i] + c[i]) / 3.0;
        assert!(
            (mono[i] - want).abs() <= 1e-7,
            "sample {i}: {} vs {want}",
            mono[i]
        );
    }
    assert_eq!(mix_to_mono(std::slice::from_ref(&l)), l);
}

#[test]
fn load_mono_resamples_to_target_rate() {
    // 48 kHz stereo, 1000 samples -> ceil(1000 * 24000 / 48000) = 500 at 24 kHz.
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    let p = tmp("res48.wav");
    write_wav(&p, &[x.clone(), x.clone()], 48000, WavSampleFormat::Int16).unwrap();
    let y = load_mono(&p, 24000).unwrap();
    assert_eq!(y.len(), 500);
    // 382 Hz tone, well inside the pass band: output sample n equals input sample 2n (interior).
    for n in 100..400 {
        assert!(
            (y[n] - x[2 * n]).abs() < 1e-3,
            "n={n}: {} vs {}",
            y[n],
            x[2 * n]
        );
    }
    // 44.1 kHz -> 24 kHz length convention: ceil(441 * 24000 / 44100) = 240.
    let p = tmp("res441.wav");
    write_wav_f32(&p, &x[..441], 44100).unwrap();
    assert_eq!(load_mono(&p, 24000).unwrap().len(), 240);
}

fn assert_err_names(p: &Path, needle: &str) {
    let err = load_mono(p, 24000).expect_err("expected an error");
    let msg = format!("{err:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains(&p.display().to_string()),
        "no file name in: {msg}"
    );
    assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
}

#[test]
fn errors_name_the_file() {
    // Missing file.
    assert_err_names(&tmp("does-not-exist.wav"), "cannot open");
    // Empty file.
    assert_err_names(&write_bytes("empty.wav", &[]), "empty");
    // Not audio at all (text named .wav).
    let txt = write_bytes("notes.wav", b"these are some notes, not audio at all\n");
    assert_err_names(&txt, "not a recognised audio file");
    // Valid header, zero samples.
    assert_err_names(
        &write_bytes("nodata.wav", &wav_bytes(1, 1, 8000, 16, &[])),
        "no audio samples",
    );
    // Truncated: header promises 400 bytes of data, only 101 are present.
    let data: Vec<u8> = (0..400u32).map(|i| i as u8).collect();
    let mut bytes = wav_bytes(1, 2, 8000, 16, &data);
    bytes.truncate(44 + 101);
    assert_err_names(&write_bytes("truncated.wav", &bytes), "truncated");
    // Corrupt header: RIFF/WAVE then garbage instead of a fmt chunk.
    let mut bytes = b"RIFF\x40\x00\x00\x00WAVE".to_vec();
    bytes.extend((0..56u8).map(|i| i.wrapping_mul(37)));
    assert_err_names(&write_bytes("corrupt.wav", &bytes), "cannot read WAV");
    // Unsupported: 64-bit float WAV.
    let bad = wav_bytes(3, 1, 8000, 64, &[0u8; 16]);
    let p = write_bytes("float64.wav", &bad);
    let err = format!(
        "{:#}",
        read_audio(&p).expect_err("64-bit float is not supported")
    );
    assert!(err.contains(&p.display().to_string()), "{err}");
}

/// Packs bits most-significant first, as FLAC does.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u64, bits: u32) {
        for i in (0..bits).rev() {
            self.acc = (self.acc << 1) | ((v >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    fn align(&mut self) {
        while self.n != 0 {
            self.put(0, 1);
        }
    }
}

fn crc(bytes: &[u8], poly: u32, width: u32) -> u32 {
    let top = 1u32 << (width - 1);
    let mask = if width == 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    };
    let mut c = 0u32;
    for &b in bytes {
        c ^= (b as u32) << (width - 8);
        for _ in 0..8 {
            c = if c & top != 0 {
                (c << 1) ^ poly
            } else {
                c << 1
            } & mask;
        }
    }
    c
}

/// A minimal FLAC stream (STREAMINFO + frames of VERBATIM 16-bit subframes), written from the
/// format specification so the symphonia path is checked against known sample values.
fn flac_bytes(channels: &[Vec<i16>], rate: u32, block: usize) -> Vec<u8> {
    let n = channels[0].len();
    let mut b = Bits {
        out: b"fLaC".to_vec(),
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // last metadata block
    b.put(0, 7); // STREAMINFO
    b.put(34, 24);
    b.put(block as u64, 16);
    b.put(block as u64, 16);
    b.put(0, 24);
    b.put(0, 24);
    b.put(rate as u64, 20);
    b.put(channels.len() as u64 - 1, 3);
    b.put(15, 5); // 16 bits per sample
    b.put(n as u64, 36);
    b.put(0, 64);
    b.put(0, 64); // MD5 unknown
    for (frame, start) in (0..n).step_by(block).enumerate() {
        let len = block.min(n - start);
        let begin = b.out.len();
        b.put(0b11111111111110, 14);
        b.put(0, 2); // reserved, fixed block size
        b.put(0b0111, 4); // block size - 1 follows as 16 bits
        b.put(0, 4); // rate from STREAMINFO
        b.put(channels.len() as u64 - 1, 4); // independent channels
        b.put(0b100, 3); // 16 bits per sample
        b.put(0, 1);
        b.put(frame as u64, 8); // frame number (< 128: one UTF-8 byte)
        b.put(len as u64 - 1, 16);
        let c8 = crc(&b.out[begin..], 0x07, 8);
        b.put(c8 as u64, 8);
        for ch in channels {
            b.put(0b0000_0010, 8); // pad, VERBATIM, no wasted bits
            for &s in &ch[start..start + len] {
                b.put(s as u16 as u64, 16);
            }
        }
        b.align();
        let c16 = crc(&b.out[begin..], 0x8005, 16);
        b.put(c16 as u64, 16);
    }
    b.out
}

#[test]
fn flac_decodes_through_symphonia() {
    let l: Vec<i16> = (0..337)
        .map(|i| ((i * 7919) % 65536 - 32768) as i16)
        .collect();
    let r: Vec<i16> = (0..337).map(|i| (i as i16).wrapping_mul(-97)).collect();
    let p = write_bytes(
        "tone.flac",
        &flac_bytes(&[l.clone(), r.clone()], 24000, 100),
    );
    let (chans, rate) = read_audio(&p).unwrap();
    assert_eq!(rate, 24000);
    let scale = |v: &[i16]| v.iter().map(|&s| s as f32 / 32768.0).collect::<Vec<f32>>();
    assert_eq!(chans, vec![scale(&l), scale(&r)]);
    let mono = load_mono(&p, 24000).unwrap();
    let want: Vec<f32> = (0..337)
        .map(|i| (chans[0][i] + chans[1][i]) * 0.5)
        .collect();
    assert_eq!(mono, want);
    // Same bytes without the extension: chosen by content.
    let q = write_bytes("tone-no-ext", &std::fs::read(&p).unwrap());
    assert_eq!(read_audio(&q).unwrap().0, chans);
}
