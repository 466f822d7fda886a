//! culturemert-raw: a from-scratch Rust + CUDA engine for MERT-style music foundation models.
//!
//! Layout (see README.md): `tensor` (the tensor type), `ops` (CPU oracle ops, forward and backward),
//! `device` + `cuda` (CUDA runtime, host emulator, kernel launchers), `autograd` (the tape),
//! `model` (MERT, heads, teachers), `audio`, `embed` (clip and corpus embedding), `train`, `eval`,
//! `merge`, `cli`.

pub mod alloc;
pub mod audio;
pub mod autograd;
pub mod cli;
pub mod cuda;
pub mod device;
pub mod embed;
pub mod eval;
pub mod io;
pub mod merge;
pub mod model;
pub mod ops;
pub mod rng;
pub mod tensor;
pub mod train;
