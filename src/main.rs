use clap::{Parser, Subcommand};
use culturemert_raw::cli;

/// culturemert-raw: train and run MERT-style music foundation models on bare CUDA (or the CPU).
#[derive(Parser)]
#[command(name = "culturemert-raw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract hidden-state embeddings from audio files.
    Embed(cli::embed::Args),
    /// Time the MERT forward pass on the CPU.
    Bench(cli::bench::Args),
    /// Compile every CUDA kernel with NVRTC and report registers, spills and shared memory.
    Kernels(cli::kernels::Args),
    /// Compute the MERT CQT target of audio files.
    Cqt(cli::cqt::Args),
    /// Task arithmetic: merge fine-tuned models into a base model.
    Merge(cli::merge::Args),
    /// Culture similarity between token histograms.
    Similarity(cli::similarity::Args),
    /// Generate the synthetic multi-cultural corpus (audio + tags).
    Synth(cli::synth::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => cli::embed::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Kernels(a) => cli::kernels::run(a),
        Command::Cqt(a) => cli::cqt::run(a),
        Command::Merge(a) => cli::merge::run(a),
        Command::Similarity(a) => cli::similarity::run(a),
        Command::Synth(a) => cli::synth::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
