//! Tensor (to be written)
