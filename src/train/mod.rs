//! Training: masking, losses, optimiser, schedules, the loop.
pub mod checkpoint;
pub mod config;
pub mod cuda_step;
pub mod data;
pub mod data_bench;
pub mod masking;
pub mod mixup;
pub mod objective;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod preset;
pub mod schedule;
pub mod trainer;
