//! MERT: config, weights (HF names), forward/backward through the tape.
pub mod config;
pub mod torch_bin;
pub mod weights;
pub mod mert;
pub mod teacher;
pub mod rp_teacher;
pub mod encodec;
