//! Rust launchers for the CUDA kernels in `kernels/*.cu`, one module per kernel family. Each launcher
//! checks sizes, computes the launch configuration and the argument array once, and launches on a
//! [`crate::device::CudaDevice`] (GPU or host emulator). Shapes and semantics follow the CPU ops in
//! `crate::ops` (forward overwrites, backward accumulates).

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod attention_tc;
mod check;
pub mod conv1d;
pub mod cqt;
pub mod dropout;
pub mod elementwise;
pub mod gelu;
pub mod gemm;
pub mod group_norm;
pub mod layer_norm;
pub mod layout;
pub mod nce_loss;
pub mod reduce;
pub mod tensor_core;
pub mod weight_norm;
