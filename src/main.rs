use clap::{Parser, Subcommand};
use culturemert_raw::alloc::RecyclingAlloc;
use culturemert_raw::cli;

#[global_allocator]
static ALLOC: RecyclingAlloc = RecyclingAlloc::new();

/// culturemert-raw: train and run MERT-style music foundation models on bare CUDA (or the CPU).
#[derive(Parser)]
#[command(name = "culturemert-raw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Continual pre-training (CultureMERT recipe) or pre-training; no arguments = the embedded demo.
    Train(cli::train::Args),
    /// Extract hidden-state embeddings from audio files.
    Embed(cli::embed::Args),
    /// Teacher tokens of audio files (random-projection or EnCodec), or label files for a dataset.
    Tokenize(cli::tokenize::Args),
    /// Compute the MERT CQT target of audio files.
    Cqt(cli::cqt::Args),
    /// Task arithmetic: merge fine-tuned models into a base model.
    Merge(cli::merge::Args),
    /// MARBLE-style probing of frozen embeddings (ROC-AUC / AP).
    Probe(cli::probe::Args),
    /// Culture similarity between token histograms.
    Similarity(cli::similarity::Args),
    /// Generate the synthetic multi-cultural corpus (audio + tags).
    Synth(cli::synth::Args),
    /// Time the MERT forward (and backward) pass on the CPU.
    Bench(cli::bench::Args),
    /// Whole training steps on a CUDA device (or the emulator, or a dry run for the memory plan).
    BenchDevice(cli::device_bench::Args),
    /// Compile every CUDA kernel with NVRTC and report registers, spills and shared memory.
    Kernels(cli::kernels::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Train(a)) => cli::train::run(a),
        Some(Command::Embed(a)) => cli::embed::run(a),
        Some(Command::Tokenize(a)) => cli::tokenize::run(a),
        Some(Command::Cqt(a)) => cli::cqt::run(a),
        Some(Command::Merge(a)) => cli::merge::run(a),
        Some(Command::Probe(a)) => cli::probe::run(a),
        Some(Command::Similarity(a)) => cli::similarity::run(a),
        Some(Command::Synth(a)) => cli::synth::run(a),
        Some(Command::Bench(a)) => cli::bench::run(a),
        Some(Command::BenchDevice(a)) => cli::device_bench::run(a),
        Some(Command::Kernels(a)) => cli::kernels::run(a),
        None => {
            use clap::CommandFactory;
            Cli::command().print_help().ok();
            println!();
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
