//! Audio: decoding, resampling, CQT, mel, the synthetic corpus.
pub mod wav;
pub mod resample;
pub mod fft;
pub mod cqt;
pub mod synth;
pub mod mel;
