//! Files the engine reads and writes that are not model-specific: safetensors, tensor names for inputs.
pub mod names;
pub mod safetensors;
