//! `culturemert-raw merge`: task arithmetic, theta = theta_pre + sum_i lambda_i (theta_i - theta_pre).
//!
//! Examples:
//!   merge --base mert --model makam --model carnatic --lambda 0.2 --out ta
//!   merge --base mert --model a --model b --lambdas 0.3,-0.1 --out ab     (negative = task negation)
//!   merge --base mert --model a --model b --average --out avg            (lambda = 1/N)
use crate::merge::{merge_dirs, resolve_lambdas};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pre-trained model directory (config.json + model.safetensors): theta_pre.
    #[arg(long)]
    pub base: PathBuf,
    /// Fine-tuned model directory theta_i (repeat for several models).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// One lambda shared by all models (negative values allowed).
    #[arg(long, allow_negative_numbers = true)]
    pub lambda: Option<f64>,
    /// One lambda per --model, comma separated, in --model order.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub lambdas: Option<Vec<f64>>,
    /// Weight averaging: lambda = 1/N for each of the N models.
    #[arg(long)]
    pub average: bool,
    /// Output directory (must not exist or be empty); gets the base's config.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let lambdas = resolve_lambdas(
        args.models.len(),
        args.lambda,
        args.lambdas.as_deref(),
        args.average,
    )?;
    let summary = merge_dirs(&args.base, &args.models, &lambdas, &args.out)?;
    println!(
        "merged {} model(s) into {} with lambdas {:?}: {} tensors ({} float elements, {} integer tensors copied)",
        args.models.len(),
        args.out.display(),
        lambdas,
        summary.tensors,
        summary.float_elements,
        summary.copied_integer_tensors
    );
    Ok(())
}
