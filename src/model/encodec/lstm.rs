//! The encoder's stacked LSTM (PyTorch nn.LSTM, seq-first, h0 = c0 = 0, gate order i, f, g, o) with
//! EnCodec's skip: y = LSTM(x) + x. Inference only.
//!
//! Per layer the input projections of all steps are one GEMM, xs [T, in] · W_ihᵀ -> [T, 4H]; only
//! W_hh · h stays sequential (a matrix-vector product per step, split over threads by gate rows).

use crate::ops::gemm::sgemm;

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
            for ((g, &p), &b) in gates.iter_mut().zip(pre).zip(&self.bias) {
                *g = p + b;
            }
            matvec_add(&mut gates, &self.w_hh, &h);
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

/// y[i] += w[i, :] · h for w [y.len(), h.len()] row-major. The recurrence is a chain of small
/// matrix-vector products (4 MB of W_hh each for the 24 kHz model), where a GEMM library's packing
/// costs more than the product; one thread streams W_hh with AVX2 FMA (no barrier per step).
fn matvec_add(y: &mut [f32], w: &[f32], h: &[f32]) {
    assert_eq!(w.len(), y.len() * h.len(), "matvec_add: shapes");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected at run time; the lengths were checked above.
        unsafe { matvec_add_avx2(y, w, h) };
        return;
    }
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(h.len())) {
        *yi += row.iter().zip(h).map(|(a, b)| a * b).sum::<f32>();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_add_avx2(y: &mut [f32], w: &[f32], h: &[f32]) {
    use std::arch::x86_64::*;
    let n = h.len();
    let n16 = n - n % 16;
    for (yi, row) in y.iter_mut().zip(w.chunks_exact(n)) {
        let (r, v) = (row.as_ptr(), h.as_ptr());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut j = 0;
        while j < n16 {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(j)), _mm256_loadu_ps(v.add(j)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(r.add(j + 8)),
                _mm256_loadu_ps(v.add(j + 8)),
                a1,
            );
            j += 16;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1));
        let mut sum: f32 = lanes.iter().sum();
        for k in n16..n {
            sum += row[k] * h[k];
        }
        *yi += sum;
    }
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
