//! The encoder's stacked LSTM (PyTorch nn.LSTM, seq-first, h0 = c0 = 0, gate order i, f, g, o) with
//! EnCodec's skip: y = LSTM(x) + x. Inference only.
//!
//! Per layer the input projections of all steps are one GEMM, xs [T, in] · W_ihᵀ -> [T, 4H]; only
//! W_hh · h stays sequential (a matrix-vector product per step, split over threads by gate rows).

use crate::ops::gemm::{num_threads, sgemm, sgemm_strided, MatRef};
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

/// Fewest W_hh rows per parallel task: below that a task costs less than its scheduling.
const ROWS_MIN: usize = 64;

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
        // W_hh · h per step: one contiguous block of gate rows per thread (the gemm crate's
        // vectorised kernels; a single-threaded call inside each task).
        let rows_per_task = if std::env::var("EQ_SERIAL").is_ok() {
            g_n
        } else {
            g_n.div_ceil(num_threads().max(1)).max(ROWS_MIN)
        }; // TMP
        for t in 0..steps {
            let pre = &gates_in[t * g_n..(t + 1) * g_n];
            for ((g, &p), &b) in gates.iter_mut().zip(pre).zip(&self.bias) {
                *g = p + b;
            }
            let hp = &h;
            gates
                .par_chunks_mut(rows_per_task)
                .zip(self.w_hh.par_chunks(rows_per_task * h_n))
                .for_each(|(gs, w)| {
                    let rows = gs.len();
                    if std::env::var("EQ_T").is_ok() {
                        // gsᵀ [1, rows] += hᵀ [1, H] · wᵀ [H, rows]
                        let a = MatRef {
                            data: hp,
                            row_stride: h_n,
                            col_stride: 1,
                        };
                        let b = MatRef {
                            data: w,
                            row_stride: 1,
                            col_stride: h_n,
                        };
                        sgemm_strided(1, rows, h_n, 1.0, a, b, gs, rows, 1, true, false);
                    } else {
                        let a = MatRef {
                            data: w,
                            row_stride: h_n,
                            col_stride: 1,
                        };
                        let b = MatRef {
                            data: hp,
                            row_stride: 1,
                            col_stride: 1,
                        };
                        sgemm_strided(rows, 1, h_n, 1.0, a, b, gs, 1, 1, true, false);
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
