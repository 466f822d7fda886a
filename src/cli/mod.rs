//! Subcommand handlers: each module has `pub struct Args` (clap) and `pub fn run(args: Args) -> anyhow::Result<()>`.
pub mod bench;
pub mod cqt;
pub mod device_bench;
pub mod device_profile;
pub mod embed;
pub mod kernels;
pub mod merge;
pub mod probe;
pub mod similarity;
pub mod synth;
pub mod tokenize;
pub mod train;
