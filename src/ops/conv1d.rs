//! nn.Conv1d (zero padding on both sides, stride, groups) as im2col + sgemm per (batch item, group):
//! col[(c*K + k), t] = x[b, g*Cin_g + c, t*stride + k - padding] (0 outside), then
//! out[b, g*Cout_g .., :] = W_g [Cout_g, Cin_g*K] · col [Cin_g*K, Lout]. Backward is the transpose:
//! dW_g += dout_g · colᵀ, dcol = W_gᵀ · dout_g scattered back into dx (col2im).
//!
//! Short kernels over many channels (the MERT conv stack: k3/k2, 512 channels) skip im2col: each
//! tap k is one GEMM out[:, t] += W[:, :, k] · x[:, t*stride + k - padding] on strided views (the
//! gemm crate packs strided operands itself), over the range of t where that tap is in bounds.

use super::gemm::{rows_per_task, sgemm, sgemm_strided, MatRef};
use rayon::prelude::*;

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

/// Tap-wise GEMMs pay off when each has a deep reduction (many input channels) and few taps.
fn use_taps(s: &Conv1dShape) -> bool {
    s.kernel <= 8 && s.in_channels / s.groups >= 32
}

/// Output positions [t0, t1) where tap `kk` reads inside the input, and the first input index.
fn tap_range(s: &Conv1dShape, kk: usize, lout: usize) -> (usize, usize, usize) {
    let t0 = s.padding.saturating_sub(kk).div_ceil(s.stride);
    let end = s.in_len + s.padding; // need t*stride + kk < in_len + padding
    let t1 = if end > kk {
        ((end - kk - 1) / s.stride + 1).min(lout)
    } else {
        0
    };
    let t1 = t1.max(t0);
    (t0, t1, (t0 * s.stride + kk).saturating_sub(s.padding))
}

/// Fills col [cin_g*K, lout] from the group's input channels xg [cin_g, lin].
fn im2col(col: &mut [f32], xg: &[f32], s: &Conv1dShape, lout: usize) {
    let (k, lin) = (s.kernel, s.in_len);
    let per = rows_per_task(col.len() / lout, 8);
    col.par_chunks_mut(per * lout)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_exact_mut(lout).enumerate() {
                let r = task * per + i;
                let (c, kk) = (r / k, r % k);
                let xc = &xg[c * lin..(c + 1) * lin];
                for (t, v) in row.iter_mut().enumerate() {
                    // input position t*stride + kk - padding, computed without underflow
                    let p = t * s.stride + kk;
                    *v = if p >= s.padding && p - s.padding < lin {
                        xc[p - s.padding]
                    } else {
                        0.0
                    };
                }
            }
        });
}

/// dxg [cin_g, lin] += scatter of dcol [cin_g*K, lout]; parallel over channels (disjoint in dx).
fn col2im_add(dxg: &mut [f32], dcol: &[f32], s: &Conv1dShape, lout: usize) {
    let (k, lin) = (s.kernel, s.in_len);
    dxg.par_chunks_mut(lin).enumerate().for_each(|(c, dxc)| {
        for kk in 0..k {
            let row = &dcol[(c * k + kk) * lout..(c * k + kk + 1) * lout];
            for (t, &v) in row.iter().enumerate() {
                let p = t * s.stride + kk;
                if p >= s.padding && p - s.padding < lin {
                    dxc[p - s.padding] += v;
                }
            }
        }
    });
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
    let taps = !direct && use_taps(s);
    let mut col = if direct || taps {
        Vec::new()
    } else {
        vec![0.0f32; ck * lout]
    };
    for b in 0..s.batch {
        for g in 0..g_n {
            let xg = &x[(b * s.in_channels + g * cin_g) * s.in_len..][..cin_g * s.in_len];
            let og = &mut out[(b * s.out_channels + g * cout_g) * lout..][..cout_g * lout];
            let wg = &weight[g * cout_g * ck..(g + 1) * cout_g * ck];
            if let Some(bias) = bias {
                assert_eq!(bias.len(), s.out_channels, "conv1d_forward: bias length");
                for (row, &bv) in og.chunks_exact_mut(lout).zip(&bias[g * cout_g..]) {
                    row.fill(bv);
                }
            }
            if taps {
                if bias.is_none() {
                    og.fill(0.0);
                }
                for kk in 0..s.kernel {
                    let (t0, t1, x0) = tap_range(s, kk, lout);
                    if t1 == t0 {
                        continue;
                    }
                    let w_tap = MatRef {
                        data: &wg[kk..],
                        row_stride: ck,
                        col_stride: s.kernel,
                    };
                    let x_tap = MatRef {
                        data: &xg[x0..],
                        row_stride: s.in_len,
                        col_stride: s.stride,
                    };
                    sgemm_strided(
                        cout_g,
                        t1 - t0,
                        cin_g,
                        1.0,
                        w_tap,
                        x_tap,
                        &mut og[t0..],
                        lout,
                        1,
                        true,
                        true,
                    );
                }
                continue;
            }
            let colm: &[f32] = if direct {
                xg
            } else {
                im2col(&mut col, xg, s, lout);
                &col
            };
            sgemm(cout_g, lout, ck, wg, false, colm, false, og, bias.is_some());
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
    if !direct && use_taps(s) {
        conv1d_backward_taps(dx, dweight, dout, x, weight, s);
        return;
    }
    let mut col = vec![0.0f32; ck * lout];
    for b in 0..s.batch {
        for g in 0..g_n {
            let xoff = (b * s.in_channels + g * cin_g) * s.in_len;
            let dg = &dout[(b * s.out_channels + g * cout_g) * lout..][..cout_g * lout];
            let wg = &weight[g * cout_g * ck..(g + 1) * cout_g * ck];
            if let Some(dw) = dweight.as_deref_mut() {
                let xg = &x[xoff..xoff + cin_g * s.in_len];
                let colm: &[f32] = if direct {
                    xg
                } else {
                    im2col(&mut col, xg, s, lout);
                    &col
                };
                let dwg = &mut dw[g * cout_g * ck..(g + 1) * cout_g * ck];
                sgemm(cout_g, ck, lout, dg, false, colm, true, dwg, true);
            }
            if let Some(dx) = dx.as_deref_mut() {
                let dxg = &mut dx[xoff..xoff + cin_g * s.in_len];
                if direct {
                    sgemm(ck, lout, cout_g, wg, true, dg, false, dxg, true);
                } else {
                    sgemm(ck, lout, cout_g, wg, true, dg, false, &mut col, false);
                    col2im_add(dxg, &col, s, lout);
                }
            }
        }
    }
}

/// Backward of the tap-wise path: per tap, dW[:, :, k] += dout[:, t0..t1] · x_tapᵀ and
/// dx[:, t*stride + k - padding] += W[:, :, k]ᵀ · dout[:, t0..t1].
fn conv1d_backward_taps(
    mut dx: Option<&mut [f32]>,
    mut dweight: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    s: &Conv1dShape,
) {
    let (g_n, lout, k) = (s.groups, s.out_len(), s.kernel);
    let (cin_g, cout_g) = (s.in_channels / g_n, s.out_channels / g_n);
    let ck = cin_g * k;
    for b in 0..s.batch {
        for g in 0..g_n {
            let xoff = (b * s.in_channels + g * cin_g) * s.in_len;
            let dg = &dout[(b * s.out_channels + g * cout_g) * lout..][..cout_g * lout];
            let wg = &weight[g * cout_g * ck..(g + 1) * cout_g * ck];
            for kk in 0..k {
                let (t0, t1, x0) = tap_range(s, kk, lout);
                if t1 == t0 {
                    continue;
                }
                let n_t = t1 - t0;
                let dout_tap = MatRef {
                    data: &dg[t0..],
                    row_stride: lout,
                    col_stride: 1,
                };
                if let Some(dw) = dweight.as_deref_mut() {
                    let xg = &x[xoff..xoff + cin_g * s.in_len];
                    let x_tap_t = MatRef {
                        data: &xg[x0..],
                        row_stride: s.stride,
                        col_stride: s.in_len,
                    };
                    let dwg = &mut dw[g * cout_g * ck + kk..(g + 1) * cout_g * ck];
                    sgemm_strided(
                        cout_g, cin_g, n_t, 1.0, dout_tap, x_tap_t, dwg, ck, k, true, true,
                    );
                }
                if let Some(dx) = dx.as_deref_mut() {
                    let w_tap_t = MatRef {
                        data: &wg[kk..],
                        row_stride: k,
                        col_stride: ck,
                    };
                    let dxg = &mut dx[xoff + x0..xoff + cin_g * s.in_len];
                    sgemm_strided(
                        cin_g, n_t, cout_g, 1.0, w_tap_t, dout_tap, dxg, s.in_len, s.stride, true,
                        true,
                    );
                }
            }
        }
    }
}
