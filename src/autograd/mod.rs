//! The autograd tape of coarse ops (docs/architecture.md section 4): parameters, the tape, and the tape-level ops.
pub mod loss;
pub mod nn;
pub mod params;
pub mod tape;

pub use params::{Param, ParamId, ParamStore};
pub use tape::{Gradients, Tape, Var};
