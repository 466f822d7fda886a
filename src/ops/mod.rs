//! CPU oracle ops: one module per op family, forward and backward side by side.
//! Plain slices in, plain slices out (llm.c style); backward functions ACCUMULATE (+=) into gradients,
//! and take `Option<&mut [f32]>` for gradients that are not wanted (frozen parameters).

pub mod activation;
pub mod attention;
pub mod conv1d;
pub mod dropout;
pub mod elementwise;
pub mod fastmath;
pub mod gelu;
pub mod gemm;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod nce_loss;
pub mod pooling;
pub mod profile;
pub mod weight_norm;
