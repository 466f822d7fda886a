//! Subcommand handlers: each module has `pub struct Args` (clap) and `pub fn run(args: Args) -> anyhow::Result<()>`.
pub mod bench;
pub mod cqt;
pub mod embed;
pub mod kernels;
pub mod merge;
pub mod similarity;
pub mod synth;
