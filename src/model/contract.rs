//! The MERT contract: constants and random draws that the CPU tape model (`model/mert.rs`) and the CUDA
//! model (`model/cuda_mert`) must share for their results to agree bit for bit. Both read them from here;
//! changing one changes both (and the goldens tell whether PyTorch still agrees). See docs/model.md.

use crate::model::weights::InitRng;
use crate::ops::dropout::dropout_hash;

/// GroupNorm / conv LayerNorm eps: torch's default, not `layer_norm_eps` (HF builds them without it).
pub const CONV_NORM_EPS: f32 = 1e-5;

/// The dropout seeds of one forward pass: one draw per dropout site, in call order (feature projection,
/// encoder input, then three per transformer layer: after attention, in the FFN, after the FFN).
pub struct DropoutSeeds(u64);

impl DropoutSeeds {
    pub fn new(forward_seed: u64) -> DropoutSeeds {
        DropoutSeeds(forward_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The seed of the next dropout site (a Weyl sequence: distinct for 2^64 sites).
    pub fn next_seed(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xD1B5_4A32_D192_ED03);
        self.0
    }
}

/// The LayerDrop draws of one forward pass: layer l is skipped when the l-th `uniform()` < layerdrop.
pub fn layerdrop_rng(forward_seed: u64) -> InitRng {
    InitRng::new(forward_seed ^ 0x5EED_1A7E_D409)
}

/// The attention-probability dropout seed of layer `layer` (its mask is regenerated in backward).
pub fn attention_dropout_seed(forward_seed: u64, layer: usize) -> u64 {
    dropout_hash(forward_seed ^ 0xA77E_D809_0000_0000, layer as u64)
}
