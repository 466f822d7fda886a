//! nn.Conv1d (zero padding on both sides, stride, groups) as im2col + sgemm per (batch item, group,
//! chunk of output positions): col[(c*K + k), j] = x[b, g*Cin_g + c, (t0 + j)*stride + k - padding]
//! (0 outside), then out[b, g*Cout_g .., t0..t0+n] = W_g [Cout_g, Cin_g*K] · col [Cin_g*K, n].
//! Backward is the transpose: dW_g += dout_g · colᵀ, dcol = W_gᵀ · dout_g scattered back into dx
//! (col2im).
//!
//! The trick: the unfolded matrix is built for a chunk of output positions at a time, sized so the
//! col buffer stays within a few MB (cache-resident, and no Cin*K x Lout copy of a long clip), while
//! each chunk is still one deep GEMM (reduction over all of Cin_g*K at once: C is written once, not
//! once per tap, and every operand the gemm crate packs is contiguous).

use super::gemm::{rows_per_task, sgemm_strided, MatRef};
use rayon::prelude::*;

/// Floats of one im2col chunk (16 MB): chunks of at least `MIN_CHUNK` positions otherwise.
const COL_BUDGET: usize = 1 << 22;
const MIN_CHUNK: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_len: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv1dShape {
    /// (in_len + 2*padding - kernel)/stride + 1
    pub fn out_len(&self) -> usize {
        (self.in_len + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Multiply-adds x 2 of the forward (each of dx and dweight costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_channels * self.out_len() * self.kernel) as f64
            * (self.in_channels / self.groups.max(1)) as f64
    }

    fn check(&self) {
        assert!(
            self.groups > 0 && self.stride > 0 && self.kernel > 0,
            "conv1d: bad shape {self:?}"
        );
        assert!(
            self.in_channels.is_multiple_of(self.groups)
                && self.out_channels.is_multiple_of(self.groups)
        );
        assert!(
            self.in_len + 2 * self.padding >= self.kernel,
            "conv1d: input shorter than kernel"
        );
    }
}

/// Output positions per im2col chunk for a reduction depth of `ck`.
fn chunk_len(ck: usize, lout: usize) -> usize {
    (COL_BUDGET / ck.max(1)).max(MIN_CHUNK).min(lout).max(1)
}

/// Output positions j in [0, n) of the chunk at t0 whose tap `kk` reads inside the input:
/// (t0 + j)*stride + kk - padding in [0, in_len).
fn valid_range(s: &Conv1dShape, kk: usize, t0: usize, n: usize) -> (usize, usize) {
    let first = s.padding.saturating_sub(kk).div_ceil(s.stride); // first t with p >= padding
    let end = s.in_len + s.padding; // need t*stride + kk < in_len + padding
    let last = if end > kk {
        (end - kk - 1) / s.stride + 1
    } else {
        0
    };
    let j0 = first.saturating_sub(t0).min(n);
    let j1 = last.saturating_sub(t0).min(n).max(j0);
    (j0, j1)
}

/// Fills col [cin_g*K, n] for output positions t0..t0+n from the group's channels xg [cin_g, lin].
fn im2col(col: &mut [f32], xg: &[f32], s: &Conv1dShape, t0: usize, n: usize) {
    let (k, lin) = (s.kernel, s.in_len);
    let per = rows_per_task(col.len() / n, 8);
    col.par_chunks_mut(per * n)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_exact_mut(n).enumerate() {
                let r = task * per + i;
                let (c, kk) = (r / k, r % k);
                let (j0, j1) = valid_range(s, kk, t0, n);
                row[..j0].fill(0.0);
                row[j1..].fill(0.0);
                if j1 > j0 {
                    let p0 = (t0 + j0) * s.stride + kk - s.padding;
                    let xc = &xg[c * lin + p0..];
                    for (j, v) in row[j0..j1].iter_mut().enumerate() {
                        *v = xc[j * s.stride];
                    }
                }
            }
        });
}

/// dxg [cin_g, lin] += scatter of dcol [cin_g*K, n] (chunk at t0); parallel over channels (disjoint).
fn col2im_add(dxg: &mut [f32], dcol: &[f32], s: &Conv1dShape, t0: usize, n: usize) {
    let (k, lin) = (s.kernel, s.in_len);
    dxg.par_chunks_mut(lin).enumerate().for_each(|(c, dxc)| {
        for kk in 0..k {
            let (j0, j1) = valid_range(s, kk, t0, n);
            if j1 == j0 {
                continue;
            }
            let row = &dcol[(c * k + kk) * n + j0..(c * k + kk) * n + j1];
            let p0 = (t0 + j0) * s.stride + kk - s.padding;
            for (j, &v) in row.iter().enumerate() {
                dxc[p0 + j * s.stride] += v;
            }
        }
    });
}

/// A row-major [rows, cols] view with row stride `rs` (or its transpose when `trans`).
fn view(data: &[f32], rs: usize, trans: bool) -> MatRef<'_> {
    if trans {
        MatRef {
            data,
            row_stride: 1,
            col_stride: rs,
        }
    } else {
        MatRef {
            data,
            row_stride: rs,
            col_stride: 1,
        }
    }
}

/// x [B, Cin, Lin], weight [Cout, Cin/groups, K], bias [Cout], out [B, Cout, Lout]
pub fn conv1d_forward(
    out: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &Conv1dShape,
) {
    let _profile = super::profile::scope("conv1d fwd", s.flops());
    s.check();
    let (g_n, lout) = (s.groups, s.out_len());
    let (cin_g, cout_g) = (s.in_channels / g_n, s.out_channels / g_n);
    let ck = cin_g * s.kernel;
    assert_eq!(
        x.len(),
        s.batch * s.in_channels * s.in_len,
        "conv1d_forward: x length"
    );
    assert_eq!(
        weight.len(),
        s.out_channels * ck,
        "conv1d_forward: weight length"
    );
    assert_eq!(
        out.len(),
        s.batch * s.out_channels * lout,
        "conv1d_forward: out length"
    );
    // A 1x1 stride-1 unpadded conv needs no unfolding: the input channels are the col matrix.
    let direct = s.kernel == 1 && s.stride == 1 && s.padding == 0;
    let chunk = if direct { lout } else { chunk_len(ck, lout) };
    let mut col = if direct {
        Vec::new()
    } else {
        vec![0.0f32; ck * chunk]
    };
    if let Some(bias) = bias {
        assert_eq!(bias.len(), s.out_channels, "conv1d_forward: bias length");
    }
    for b in 0..s.batch {
        for g in 0..g_n {
            let xg = &x[(b * s.in_channels + g * cin_g) * s.in_len..][..cin_g * s.in_len];
            let og = &mut out[(b * s.out_channels + g * cout_g) * lout..][..cout_g * lout];
            let wg = &weight[g * cout_g * ck..(g + 1) * cout_g * ck];
            if let Some(bias) = bias {
                for (row, &bv) in og.chunks_exact_mut(lout).zip(&bias[g * cout_g..]) {
                    row.fill(bv);
                }
            }
            for t0 in (0..lout).step_by(chunk) {
                let n = chunk.min(lout - t0);
                let colm: &[f32] = if direct {
                    &xg[t0..]
                } else {
                    im2col(&mut col[..ck * n], xg, s, t0, n);
                    &col[..ck * n]
                };
                let col_rs = if direct { s.in_len } else { n };
                sgemm_strided(
                    cout_g,
                    n,
                    ck,
                    1.0,
                    view(wg, ck, false),
                    view(colm, col_rs, false),
                    &mut og[t0..],
                    lout,
                    1,
                    bias.is_some(),
                    true,
                );
            }
        }
    }
}

pub fn conv1d_backward(
    dx: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    s: &Conv1dShape,
) {
    let _profile = super::profile::scope(
        "conv1d bwd",
        (dx.is_some() as usize + dweight.is_some() as usize) as f64 * s.flops(),
    );
    s.check();
    let (g_n, lout) = (s.groups, s.out_len());
    let (cin_g, cout_g) = (s.in_channels / g_n, s.out_channels / g_n);
    let ck = cin_g * s.kernel;
    assert_eq!(
        x.len(),
        s.batch * s.in_channels * s.in_len,
        "conv1d_backward: x length"
    );
    assert_eq!(
        weight.len(),
        s.out_channels * ck,
        "conv1d_backward: weight length"
    );
    assert_eq!(
        dout.len(),
        s.batch * s.out_channels * lout,
        "conv1d_backward: dout length"
    );
    if let Some(dbias) = dbias {
        assert_eq!(dbias.len(), s.out_channels, "conv1d_backward: dbias length");
        for b in 0..s.batch {
            let db = &dout[b * s.out_channels * lout..(b + 1) * s.out_channels * lout];
            for (acc, row) in dbias.iter_mut().zip(db.chunks_exact(lout)) {
                *acc += row.iter().sum::<f32>();
            }
        }
    }
    let (mut dx, mut dweight) = (dx, dweight);
    if let Some(dx) = dx.as_deref() {
        assert_eq!(dx.len(), x.len(), "conv1d_backward: dx length");
    }
    if let Some(dw) = dweight.as_deref() {
        assert_eq!(dw.len(), weight.len(), "conv1d_backward: dweight length");
    }
    if dx.is_none() && dweight.is_none() {
        return;
    }
    let direct = s.kernel == 1 && s.stride == 1 && s.padding == 0;
    let chunk = if direct { lout } else { chunk_len(ck, lout) };
    let (mut col, mut dcol) = if direct {
        (Vec::new(), Vec::new())
    } else {
        (vec![0.0f32; ck * chunk], vec![0.0f32; ck * chunk])
    };
    for b in 0..s.batch {
        for g in 0..g_n {
            let xoff = (b * s.in_channels + g * cin_g) * s.in_len;
            let dg = &dout[(b * s.out_channels + g * cout_g) * lout..][..cout_g * lout];
            let wg = &weight[g * cout_g * ck..(g + 1) * cout_g * ck];
            for t0 in (0..lout).step_by(chunk) {
                let n = chunk.min(lout - t0);
                let dout_chunk = view(&dg[t0..], lout, false);
                if let Some(dw) = dweight.as_deref_mut() {
                    let xg = &x[xoff..xoff + cin_g * s.in_len];
                    let (colm, col_rs): (&[f32], usize) = if direct {
                        (&xg[t0..], s.in_len)
                    } else {
                        im2col(&mut col[..ck * n], xg, s, t0, n);
                        (&col[..ck * n], n)
                    };
                    let dwg = &mut dw[g * cout_g * ck..(g + 1) * cout_g * ck];
                    let col_t = view(colm, col_rs, true);
                    sgemm_strided(
                        cout_g, ck, n, 1.0, dout_chunk, col_t, dwg, ck, 1, true, true,
                    );
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let dxg = &mut dx[xoff..xoff + cin_g * s.in_len];
                    let w_t = view(wg, ck, true);
                    if direct {
                        let dxc = &mut dxg[t0..];
                        sgemm_strided(
                            ck, n, cout_g, 1.0, w_t, dout_chunk, dxc, s.in_len, 1, true, true,
                        );
                    } else {
                        let dc = &mut dcol[..ck * n];
                        sgemm_strided(ck, n, cout_g, 1.0, w_t, dout_chunk, dc, n, 1, false, true);
                        col2im_add(dxg, dc, s, t0, n);
                    }
                }
            }
        }
    }
}
