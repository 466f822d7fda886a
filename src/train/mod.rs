//! Training: masking, losses, optimiser, schedules, the loop.
pub mod masking;
pub mod objective;
pub mod config;
pub mod optim;
pub mod schedule;
