//! Audio: decoding, resampling, CQT, mel, the synthetic corpus.
pub mod cqt;
pub mod fft;
pub mod mel;
pub mod resample;
pub mod synth;
pub mod wav;
