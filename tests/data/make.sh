#!/bin/sh
# Regenerates tests/data/formats/*, the files tests/audio_formats.rs decodes and compares with the WAV
# each one was encoded from. Run from anywhere: sh tests/data/make.sh
#
# Made on 2026-12-04 with Debian 12 packages: SoX v14.4.2, LAME 3.100, vorbis-tools (oggenc) 1.4.2,
# flac 1.4.2, Python 3.11 (standard library only, for the float masters).
#
# Masters: 0.3 s of two tones per channel with 10 ms raised-cosine fades, written as 32-bit float WAV by
# the Python below (the test recomputes the same closed form). Everything else derives from a master:
#   sox, no dither (-D): the integer WAVs; flac: lossless from an integer WAV; lame / oggenc: lossy.
set -eu
cd "$(dirname "$0")/formats"

python3 - <<'PY'
import math, struct

def master(path, rate, channels):
    n = int(round(0.3 * rate))
    fade = int(round(0.010 * rate))
    tones = [(440.0, 0.45, 0.0, 660.0, 0.20, 0.7), (550.0, 0.35, 1.1, 825.0, 0.25, 2.3)]
    frames = []
    for i in range(n):
        t = i / rate
        w = 1.0
        if i < fade:
            w = 0.5 - 0.5 * math.cos(math.pi * i / fade)
        elif i >= n - fade:
            w = 0.5 - 0.5 * math.cos(math.pi * (n - 1 - i) / fade)
        for c in range(channels):
            f1, a1, p1, f2, a2, p2 = tones[c]
            x = w * (a1 * math.sin(2 * math.pi * f1 * t + p1) + a2 * math.sin(2 * math.pi * f2 * t + p2))
            frames.append(struct.pack('<f', x))
    data = b''.join(frames)
    block = 4 * channels
    fmt = struct.pack('<HHIIHH', 3, channels, rate, rate * block, block, 32)
    with open(path, 'wb') as f:
        f.write(b'RIFF' + struct.pack('<I', 4 + 8 + len(fmt) + 8 + len(data)) + b'WAVE')
        f.write(b'fmt ' + struct.pack('<I', len(fmt)) + fmt)
        f.write(b'data' + struct.pack('<I', len(data)) + data)

master('m16k_mono_f32.wav', 16000, 1)
master('m44k_stereo_f32.wav', 44100, 2)
master('m48k_stereo_f32.wav', 48000, 2)
PY

# Integer WAVs from the float masters (sox rounds to nearest; -D turns dither off).
sox -D m16k_mono_f32.wav -b 16 -e signed-integer m16k_mono_s16.wav
sox -D m44k_stereo_f32.wav -b 24 -e signed-integer m44k_stereo_s24.wav
sox -D m48k_stereo_f32.wav -b 32 -e signed-integer m48k_stereo_s32.wav

# Lossless: FLAC from integer WAVs (16-bit mono, 24-bit stereo).
flac -s -f -8 --no-padding -o m16k_mono_s16.flac m16k_mono_s16.wav
flac -s -f -8 --no-padding -o m44k_stereo_s24.flac m44k_stereo_s24.wav

# Lossy: MP3 (LAME, CBR) and Ogg Vorbis (oggenc, quality 6) from 16-bit WAVs.
sox -D m44k_stereo_f32.wav -b 16 -e signed-integer tmp_m44k_stereo_s16.wav
lame --quiet -b 32 m16k_mono_s16.wav m16k_mono_s16.mp3
lame --quiet -b 192 tmp_m44k_stereo_s16.wav m44k_stereo_s16.mp3
oggenc --quiet --serial 1 -q 6 -o m16k_mono_s16.ogg m16k_mono_s16.wav
oggenc --quiet --serial 1 -q 6 -o m44k_stereo_s16.ogg tmp_m44k_stereo_s16.wav
rm tmp_m44k_stereo_s16.wav
