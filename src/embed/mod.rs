//! Embedding audio with a MERT model, from one clip to a whole corpus.
//!
//! * [`clip`]: the hidden states of one clip (layers, chunking, mean pooling) on the CPU or a CUDA device.
//! * [`inputs`]: files, directories and manifests expanded into [`Input`]s with relative output names.
//! * [`corpus`]: [`embed_corpus`], the streaming API (background decoding, bounded memory, per-input
//!   errors as values).
//! * [`out_dir`]: `embed --out-dir` on top of it (one file per input, atomic writes, resume, errors.tsv).

pub mod clip;
pub mod corpus;
pub mod inputs;
pub mod out_dir;

pub use clip::{
    embed_samples, embed_samples_on, parse_layers, tensor_name, zero_mean_unit_var, Backend, Pool,
};
pub use corpus::{decode, embed_corpus, CorpusStats, EmbedSettings, Embedding};
pub use inputs::{list_inputs, Input};
pub use out_dir::{embed_to_dir, is_valid_output, output_path, OutDirSummary};
