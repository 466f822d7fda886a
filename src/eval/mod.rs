//! Evaluation: probing metrics, culture similarity.
pub mod metrics;
pub mod probe;
pub mod similarity;
