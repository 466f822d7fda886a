//! Training: masking, losses, optimiser, schedules, the loop.
pub mod masking;
pub mod objective;
pub mod config;
pub mod optim;
pub mod schedule;
pub mod checkpoint;
pub mod data;
pub mod mixup;
pub mod plot;
pub mod trainer;
