//! Residual vector quantisation (encode only): for each codebook in turn, the nearest codeword of
//! the residual and the residual minus that codeword.

use crate::ops::gemm::sgemm;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct Rvq {
    /// One [codebook_size, dim] table per quantizer, in order.
    pub codebooks: Vec<Vec<f32>>,
    /// |e_c|^2 of each codeword, per codebook.
    pub norms: Vec<Vec<f32>>,
    pub codebook_size: usize,
    pub dim: usize,
}

impl Rvq {
    pub fn new(codebooks: Vec<Vec<f32>>, codebook_size: usize, dim: usize) -> Self {
        let norms = codebooks
            .iter()
            .map(|cb| {
                cb.chunks_exact(dim)
                    .map(|e| e.iter().map(|v| v * v).sum())
                    .collect()
            })
            .collect();
        Rvq {
            codebooks,
            norms,
            codebook_size,
            dim,
        }
    }

    /// emb [dim, T] (encoder layout) -> codes [n_q, T] row-major with the first `n_q` codebooks.
    /// Distance as transformers writes it, d = (|r|^2 - 2 r.e) + |e|^2 in f32, smallest wins, first
    /// index on ties (torch's max of -d).
    pub fn encode(&self, emb: &[f32], frames: usize, n_q: usize) -> Vec<u16> {
        let (d, c) = (self.dim, self.codebook_size);
        let mut r = vec![0.0f32; frames * d];
        for k in 0..d {
            for t in 0..frames {
                r[t * d + k] = emb[k * frames + t];
            }
        }
        let mut codes = vec![0u16; n_q * frames];
        let mut dots = vec![0.0f32; frames * c];
        for q in 0..n_q {
            let (cb, norms) = (&self.codebooks[q], &self.norms[q]);
            sgemm(frames, c, d, &r, false, cb, true, &mut dots, false);
            let row_codes = &mut codes[q * frames..(q + 1) * frames];
            row_codes
                .par_iter_mut()
                .zip(r.par_chunks_mut(d))
                .zip(dots.par_chunks(c))
                .for_each(|((code, rt), dt)| {
                    let rr: f32 = rt.iter().map(|v| v * v).sum();
                    let (mut best, mut best_d) = (0usize, f32::INFINITY);
                    for (i, (&dot, &ee)) in dt.iter().zip(norms).enumerate() {
                        let dist = (rr - 2.0 * dot) + ee;
                        if dist < best_d {
                            best_d = dist;
                            best = i;
                        }
                    }
                    *code = best as u16;
                    for (v, e) in rt.iter_mut().zip(&cb[best * d..(best + 1) * d]) {
                        *v -= e;
                    }
                });
        }
        codes
    }
}
