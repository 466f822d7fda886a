//! Rust launchers for the CUDA kernels in `kernels/*.cu`, one module per kernel family.
