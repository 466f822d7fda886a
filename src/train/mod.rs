//! Training: masking, losses, optimiser, schedules, the loop.
pub mod masking;
pub mod objective;
