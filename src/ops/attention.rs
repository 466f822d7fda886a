//! Multi-head self-attention core (after the q/k/v projections), one (batch, head) per rayon task:
//! S = scale · Q_h K_hᵀ, masked keys get probability 0, P = softmax(S) row-wise, out_h = P V_h.
//! Heads are addressed in place as strided column blocks of [B, T, H*D] (no reshuffling copies).
//! lse[b, h, i] = log Σ_j exp(S_ij) over valid keys is saved, so backward recomputes P = exp(S - lse)
//! instead of storing the T×T probabilities. A query row with no valid key gets out = 0 and
//! lse = -inf (and zero gradients).
//!
//! Optional probability dropout (HF HuBERT's `attention_dropout`, training only): with keep mask M and
//! c = 1/(1-p) (f32), out = (P ∘ M c) V while lse stays that of the undropped softmax. The mask is
//! never stored: M_ij = `dropout_keep(seed, ((b*H + h)*T + i)*T + j, p)` (src/ops/dropout.rs), so the
//! backward (and kernels/attention.cu) regenerate it. Backward with P̃ = P ∘ M c:
//!   dV = P̃ᵀ dO,  dP_ij = M_ij c (dO_i · V_j),  dS_ij = P_ij (dP_ij - δ_i),  δ_i = Σ_j P_ij dP_ij.
//! δ_i = Σ_j P_ij M_ij c (dO_i · V_j) = dO_i · (Σ_j P̃_ij V_j) = dO_i · O_i: the dropped output O
//! absorbs the mask, so the usual rowsum(dO ∘ O) stays exact with dropout on.

use super::dropout::dropout_keep;
use super::fastmath::{exp_f32, with_simd};
use super::gemm::{num_threads, sgemm_strided_raw, MatRef};
use rayon::prelude::*;

/// Dropout on the attention probabilities: probability (b, h, i, j) is kept with probability 1 - p
/// (and scaled by 1/(1-p)) according to the counter hash of (seed, ((b*H + h)*T + i)*T + j).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    pub p: f32,
    pub seed: u64,
}

impl AttentionDropout {
    /// The scale of kept probabilities, 1/(1-p) rounded in f32 (as in `ops::dropout`).
    pub fn scale(&self) -> f32 {
        1.0f32 / (1.0f32 - self.p)
    }
    /// The flat mask counter of query row `i` of head `bh` = b*H + h, key 0 (add j for key j).
    pub fn row_counter(s: &AttentionShape, bh: usize, i: usize) -> u64 {
        ((bh * s.seq + i) * s.seq) as u64
    }
    fn check(&self, what: &str) {
        assert!(
            (0.0..=1.0).contains(&self.p),
            "{what}: attention dropout p = {} outside [0, 1]",
            self.p
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// A raw pointer that rayon tasks may share; each task writes a disjoint strided block.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl AttentionShape {
    /// Forward FLOPs: QKᵀ and PV, 2 x 2 B H T² D (backward: 2.5x, with the recomputed scores).
    pub fn flops(&self) -> f64 {
        4.0 * (self.batch * self.heads * self.seq * self.seq * self.head_dim) as f64
    }
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn len(&self) -> usize {
        self.batch * self.seq * self.width()
    }
    /// Head h of batch item b as a [T, D] strided view of a [B, T, H*D] buffer.
    fn head<'a>(&self, x: &'a [f32], b: usize, h: usize) -> MatRef<'a> {
        let off = b * self.seq * self.width() + h * self.head_dim;
        MatRef {
            data: &x[off..],
            row_stride: self.width(),
            col_stride: 1,
        }
    }
    /// The same head viewed transposed, [D, T].
    fn head_t<'a>(&self, x: &'a [f32], b: usize, h: usize) -> MatRef<'a> {
        let m = self.head(x, b, h);
        MatRef {
            data: m.data,
            row_stride: 1,
            col_stride: self.width(),
        }
    }
    fn head_offset(&self, b: usize, h: usize) -> usize {
        b * self.seq * self.width() + h * self.head_dim
    }
}

/// S = scale · Q_h K_hᵀ for the query rows `rows` into `s` [rows.len(), T].
#[allow(clippy::too_many_arguments)]
fn scores(
    s: &mut [f32],
    q: &[f32],
    k: &[f32],
    b: usize,
    h: usize,
    sh: &AttentionShape,
    scale: f32,
    par: bool,
    rows: std::ops::Range<usize>,
) {
    let t = sh.seq;
    let qh = sh.head(q, b, h);
    let q_rows = MatRef {
        data: &qh.data[rows.start * qh.row_stride..],
        ..qh
    };
    assert_eq!(s.len(), rows.len() * t, "attention scores: buffer length");
    // SAFETY: `s` holds exactly rows.len()*T values, written row-major.
    unsafe {
        sgemm_strided_raw(
            rows.len(),
            t,
            sh.head_dim,
            scale,
            q_rows,
            sh.head_t(k, b, h),
            s.as_mut_ptr(),
            t,
            1,
            false,
            par,
        );
    }
}

/// Query rows per block of the forward: the block's scores (rows x T) stay within ~1 MB (L2), so
/// softmax and the P·V product read them from cache even for long clips (T = 2249 at 30 s).
fn row_block(t: usize) -> usize {
    (SCORE_BLOCK_FLOATS / t.max(1)).max(16).min(t).max(1)
}
const SCORE_BLOCK_FLOATS: usize = 1 << 18;

#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_valid: Option<&[u8]>,
    s: &AttentionShape,
    scale: f32,
    dropout: Option<AttentionDropout>,
) {
    let _profile = super::profile::scope("attention fwd", s.flops());
    let (t, hd) = (s.seq, s.head_dim);
    if let Some(d) = &dropout {
        d.check("attention_forward");
    }
    assert!(
        q.len() == s.len() && k.len() == s.len() && v.len() == s.len(),
        "attention_forward: q/k/v length"
    );
    assert_eq!(out.len(), s.len(), "attention_forward: out length");
    assert_eq!(
        lse.len(),
        s.batch * s.heads * t,
        "attention_forward: lse length"
    );
    if let Some(kv) = key_valid {
        assert_eq!(kv.len(), s.batch * t, "attention_forward: key_valid length");
    }
    if t == 0 || hd == 0 {
        return;
    }
    let out_ptr = SharedMut(out.as_mut_ptr());
    let par = s.batch * s.heads < num_threads();
    // lse is [B, H, T]: task (b, h) owns the contiguous chunk bh.
    lse.par_chunks_mut(t).enumerate().for_each(|(bh, lse_h)| {
        let (b, h) = (bh / s.heads, bh % s.heads);
        let valid = key_valid.map(|kv| &kv[b * t..(b + 1) * t]);
        let block = row_block(t);
        let mut p = vec![0.0f32; block * t];
        for i0 in (0..t).step_by(block) {
            let n = block.min(t - i0);
            let pb = &mut p[..n * t];
            scores(pb, q, k, b, h, s, scale, par, i0..i0 + n);
            for (i, (row, lse_i)) in pb.chunks_exact_mut(t).zip(&mut lse_h[i0..]).enumerate() {
                *lse_i = softmax_row(row, valid);
                if let Some(d) = &dropout {
                    // P̃ = P ∘ M c; lse keeps the undropped normaliser.
                    let (base, c) = (AttentionDropout::row_counter(s, bh, i0 + i), d.scale());
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = if dropout_keep(d.seed, base + j as u64, d.p) {
                            *x * c
                        } else {
                            0.0
                        };
                    }
                }
            }
            let o = out_ptr;
            // SAFETY: head (b, h) of `out` is the strided block rows b*T.., columns h*D..(h+1)*D,
            // disjoint from every other task's block and within `out` (length checked above).
            unsafe {
                let dst = o.0.add(s.head_offset(b, h) + i0 * s.width());
                sgemm_strided_raw(
                    n,
                    hd,
                    t,
                    1.0,
                    MatRef {
                        data: pb,
                        row_stride: t,
                        col_stride: 1,
                    },
                    s.head(v, b, h),
                    dst,
                    s.width(),
                    1,
                    false,
                    par,
                );
            }
        }
    });
}

/// In-place masked softmax of one score row; returns log Σ exp over valid keys (-inf if none).
/// Branch-free inner loops (masked keys are multiplied by 0) so the exp vectorizes.
fn softmax_row(row: &mut [f32], valid: Option<&[u8]>) -> f32 {
    let max = with_simd(
        #[inline(always)]
        || max_valid(row, valid),
    );
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return f32::NEG_INFINITY;
    }
    let sum = with_simd(
        #[inline(always)]
        || {
            match valid {
                None => row.iter_mut().for_each(|x| *x = exp_f32(*x - max)),
                Some(v) => row
                    .iter_mut()
                    .zip(v)
                    .for_each(|(x, &m)| *x = exp_f32(*x - max) * f32::from(m != 0)),
            }
            sum_lanes(row)
        },
    );
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
    max + sum.ln()
}

/// The maximum over valid keys (-inf if none), in 16 interleaved lanes so it vectorizes.
#[inline(always)]
fn max_valid(row: &[f32], valid: Option<&[u8]>) -> f32 {
    let keep = |x: f32, m: u8| if m != 0 { x } else { f32::NEG_INFINITY };
    let larger = |a: f32, x: f32| if x > a { x } else { a };
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut tail = f32::NEG_INFINITY;
    match valid {
        None => {
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for (a, &x) in acc.iter_mut().zip(c) {
                    *a = larger(*a, x);
                }
            }
            tail = chunks.remainder().iter().fold(tail, |m, &x| larger(m, x));
        }
        Some(v) => {
            let mut chunks = row.chunks_exact(16);
            let mut masks = v.chunks_exact(16);
            for (c, mc) in (&mut chunks).zip(&mut masks) {
                for ((a, &x), &m) in acc.iter_mut().zip(c).zip(mc) {
                    *a = larger(*a, keep(x, m));
                }
            }
            let rest = chunks.remainder().iter().zip(masks.remainder());
            tail = rest.fold(tail, |m, (&x, &k)| larger(m, keep(x, k)));
        }
    }
    acc.iter().fold(tail, |m, &x| larger(m, x))
}

/// Σ row with 8 interleaved partial sums (a fixed order the compiler can vectorize).
#[inline(always)]
fn sum_lanes(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// P = exp(S - lse) in place for one row (0 for masked keys and for rows without valid keys).
fn probabilities_row(row: &mut [f32], lse: f32, valid: Option<&[u8]>) {
    if lse == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    with_simd(
        #[inline(always)]
        || match valid {
            None => row.iter_mut().for_each(|x| *x = exp_f32(*x - lse)),
            Some(v) => row
                .iter_mut()
                .zip(v)
                .for_each(|(x, &m)| *x = exp_f32(*x - lse) * f32::from(m != 0)),
        },
    )
}

/// dv += P̃ᵀ dO; dS = P ∘ (M c ∘ dO Vᵀ - rowsum(dO ∘ O)); dq += scale dS K; dk += scale dSᵀ Q
/// (without dropout M c = 1 and P̃ = P). `out` must be the forward's output with the same dropout.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    key_valid: Option<&[u8]>,
    s: &AttentionShape,
    scale: f32,
    dropout: Option<AttentionDropout>,
) {
    let _profile = super::profile::scope("attention bwd", 2.5 * s.flops());
    let (t, hd, w) = (s.seq, s.head_dim, s.width());
    if let Some(d) = &dropout {
        d.check("attention_backward");
    }
    for (name, x) in [
        ("dq", &*dq),
        ("dk", &*dk),
        ("dv", &*dv),
        ("dout", dout),
        ("q", q),
        ("k", k),
        ("v", v),
        ("out", out),
    ] {
        assert_eq!(x.len(), s.len(), "attention_backward: {name} length");
    }
    assert_eq!(
        lse.len(),
        s.batch * s.heads * t,
        "attention_backward: lse length"
    );
    if let Some(kv) = key_valid {
        assert_eq!(
            kv.len(),
            s.batch * t,
            "attention_backward: key_valid length"
        );
    }
    if t == 0 || hd == 0 {
        return;
    }
    let (dq_ptr, dk_ptr, dv_ptr) = (
        SharedMut(dq.as_mut_ptr()),
        SharedMut(dk.as_mut_ptr()),
        SharedMut(dv.as_mut_ptr()),
    );
    let par = s.batch * s.heads < num_threads();
    (0..s.batch * s.heads).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / s.heads, bh % s.heads);
        let valid = key_valid.map(|kv| &kv[b * t..(b + 1) * t]);
        let lse_h = &lse[bh * t..(bh + 1) * t];
        // P = exp(S - lse), recomputed.
        let mut p = vec![0.0f32; t * t];
        scores(&mut p, q, k, b, h, s, scale, par, 0..t);
        for (row, &l) in p.chunks_exact_mut(t).zip(lse_h) {
            probabilities_row(row, l, valid);
        }
        // dP = dO_h V_hᵀ
        let mut ds = vec![0.0f32; t * t];
        // SAFETY: ds holds T*T values.
        unsafe {
            sgemm_strided_raw(
                t,
                t,
                hd,
                1.0,
                s.head(dout, b, h),
                s.head_t(v, b, h),
                ds.as_mut_ptr(),
                t,
                1,
                false,
                par,
            );
        }
        let off = s.head_offset(b, h);
        for i in 0..t {
            let row_o = &out[off + i * w..off + i * w + hd];
            let row_do = &dout[off + i * w..off + i * w + hd];
            let di: f32 = row_o.iter().zip(row_do).map(|(a, b)| a * b).sum();
            let (ds_row, p_row) = (&mut ds[i * t..(i + 1) * t], &mut p[i * t..(i + 1) * t]);
            match &dropout {
                None => {
                    for (d, &pv) in ds_row.iter_mut().zip(p_row.iter()) {
                        *d = pv * (*d - di);
                    }
                }
                // dP = M c ∘ (dO Vᵀ); P becomes P̃ for the dv product below.
                Some(dr) => {
                    let (base, c) = (AttentionDropout::row_counter(s, bh, i), dr.scale());
                    for (j, (d, pv)) in ds_row.iter_mut().zip(p_row.iter_mut()).enumerate() {
                        let keep = dropout_keep(dr.seed, base + j as u64, dr.p);
                        let dp = if keep { *d * c } else { 0.0 };
                        *d = *pv * (dp - di);
                        *pv = if keep { *pv * c } else { 0.0 };
                    }
                }
            }
        }
        let p_t = MatRef {
            data: &p,
            row_stride: 1,
            col_stride: t,
        };
        let ds_m = MatRef {
            data: &ds,
            row_stride: t,
            col_stride: 1,
        };
        let ds_t = MatRef {
            data: &ds,
            row_stride: 1,
            col_stride: t,
        };
        let (dqp, dkp, dvp) = (dq_ptr, dk_ptr, dv_ptr);
        // SAFETY: each task accumulates into its own head block (rows of batch b, columns h*D..)
        // of dq/dk/dv, disjoint from all other tasks and within the buffers (lengths checked).
        unsafe {
            sgemm_strided_raw(
                t,
                hd,
                t,
                1.0,
                p_t,
                s.head(dout, b, h),
                dvp.0.add(off),
                w,
                1,
                true,
                par,
            );
            sgemm_strided_raw(
                t,
                hd,
                t,
                scale,
                ds_m,
                s.head(k, b, h),
                dqp.0.add(off),
                w,
                1,
                true,
                par,
            );
            sgemm_strided_raw(
                t,
                hd,
                t,
                scale,
                ds_t,
                s.head(q, b, h),
                dkp.0.add(off),
                w,
                1,
                true,
                par,
            );
        }
    });
}
