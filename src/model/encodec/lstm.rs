//! The encoder's stacked LSTM (PyTorch nn.LSTM, seq-first, h0 = c0 = 0, gate order i, f, g, o) with
//! EnCodec's skip: y = LSTM(x) + x. Inference only.
//!
//! Per layer the input projections of all steps are one GEMM, xs [T, in] · W_ihᵀ -> [T, 4H]; only
//! W_hh · h stays sequential (a matrix-vector product per step, split over threads by gate rows).

use crate::ops::gemm::sgemm;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct LstmLayer {
    /// [4H, in]
    pub w_ih: Vec<f32>,
    /// [4H, H]
    pub w_hh: Vec<f32>,
    /// b_ih + b_hh, [4H]
    pub bias: Vec<f32>,
    pub input_size: usize,
    pub hidden: usize,
}

#[derive(Clone, Debug)]
pub struct Lstm {
    pub layers: Vec<LstmLayer>,
}

/// Rows of W_hh per parallel task: big enough that a task outweighs its scheduling cost.
const ROWS_PER_TASK: usize = 128;

impl LstmLayer {
    /// xs [T, input] -> hidden states [T, H].
    fn forward(&self, xs: &[f32], steps: usize) -> Vec<f32> {
        let (h_n, g_n) = (self.hidden, 4 * self.hidden);
        let mut gates_in = vec![0.0f32; steps * g_n];
        sgemm(
            steps,
            g_n,
            self.input_size,
            xs,
            false,
            &self.w_ih,
            true,
            &mut gates_in,
            false,
        );
        let mut out = vec![0.0f32; steps * h_n];
        let mut h = vec![0.0f32; h_n];
        let mut c = vec![0.0f32; h_n];
        let mut gates = vec![0.0f32; g_n];
        for t in 0..steps {
            let pre = &gates_in[t * g_n..(t + 1) * g_n];
            let hp = &h;
            gates
                .par_chunks_mut(ROWS_PER_TASK)
                .zip(self.w_hh.par_chunks(ROWS_PER_TASK * h_n))
                .enumerate()
                .for_each(|(task, (gs, w))| {
                    let r0 = task * ROWS_PER_TASK;
                    for (i, (g, wr)) in gs.iter_mut().zip(w.chunks_exact(h_n)).enumerate() {
                        *g = pre[r0 + i] + self.bias[r0 + i] + dot(wr, hp);
                    }
                });
            let (gi, rest) = gates.split_at(h_n);
            let (gf, rest) = rest.split_at(h_n);
            let (gg, go) = rest.split_at(h_n);
            for j in 0..h_n {
                let cj = sigmoid(gf[j]) * c[j] + sigmoid(gi[j]) * gg[j].tanh();
                c[j] = cj;
                h[j] = sigmoid(go[j]) * cj.tanh();
            }
            out[t * h_n..(t + 1) * h_n].copy_from_slice(&h);
        }
        out
    }
}

impl Lstm {
    /// x [C, T] (conv layout) -> LSTM(x) + x, [C, T].
    pub fn forward(&self, x: &[f32], channels: usize, steps: usize) -> Vec<f32> {
        let mut seq = transpose(x, channels, steps);
        let skip = seq.clone();
        for layer in &self.layers {
            seq = layer.forward(&seq, steps);
        }
        for (a, b) in seq.iter_mut().zip(&skip) {
            *a += *b;
        }
        transpose(&seq, steps, channels)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Dot product with 8 independent partial sums (vectorisable; the order differs from a serial sum
/// only by rounding).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// [rows, cols] -> [cols, rows]
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            y[c * rows + r] = x[r * cols + c];
        }
    }
    y
}
