//! MERT: config, weights (HF names), forward/backward through the tape.
pub mod config;
pub mod contract;
pub mod cuda_mert;
pub mod encodec;
pub mod mert;
pub mod rp_teacher;
pub mod teacher;
pub mod torch_bin;
pub mod weights;
