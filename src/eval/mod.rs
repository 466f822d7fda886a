//! Evaluation: probing metrics, culture similarity.
pub mod metrics;
pub mod similarity;
pub mod probe;
