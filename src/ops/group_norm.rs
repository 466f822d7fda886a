//! nn.GroupNorm on x [B, C, L]: statistics per (b, group) over the (C/G)*L values of the group
//! (biased variance), then a per-channel affine. mean/rstd [B*G] are saved for backward.

use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    batch: usize,
    channels: usize,
    len: usize,
    groups: usize,
    eps: f32,
) {
    let _profile = super::profile::scope("group_norm fwd", 0.0);
    assert!(
        groups > 0 && channels.is_multiple_of(groups),
        "group_norm_forward: channels % groups != 0"
    );
    assert_eq!(
        x.len(),
        batch * channels * len,
        "group_norm_forward: x length"
    );
    assert_eq!(out.len(), x.len(), "group_norm_forward: out length");
    assert!(
        mean.len() == batch * groups && rstd.len() == batch * groups,
        "group_norm_forward: stats"
    );
    assert!(
        weight.len() == channels && bias.len() == channels,
        "group_norm_forward: affine length"
    );
    let cg = channels / groups;
    let gsize = cg * len;
    if gsize == 0 {
        return;
    }
    // One task per (b, g): a contiguous block of cg*len values.
    out.par_chunks_mut(gsize)
        .zip(x.par_chunks(gsize))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .for_each(|(bg, ((o, xg), (m_out, s_out)))| {
            let n = gsize as f64;
            let m = xg.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xg
                .iter()
                .map(|&v| (v as f64 - m) * (v as f64 - m))
                .sum::<f64>()
                / n;
            let (m, s) = (m as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
            *m_out = m;
            *s_out = s;
            let c0 = (bg % groups) * cg;
            for (ci, (orow, xrow)) in o
                .chunks_exact_mut(len)
                .zip(xg.chunks_exact(len))
                .enumerate()
            {
                let (w, b) = (weight[c0 + ci], bias[c0 + ci]);
                for (o, &xv) in orow.iter_mut().zip(xrow) {
                    *o = (xv - m) * s * w + b;
                }
            }
        });
}

/// dx += rstd (g - mean(g) - xhat mean(g xhat)) over each group, g = dout * weight[c];
/// dweight[c] += Σ_{b,l} dout xhat; dbias[c] += Σ_{b,l} dout.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dx: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    batch: usize,
    channels: usize,
    len: usize,
    groups: usize,
) {
    let _profile = super::profile::scope("group_norm bwd", 0.0);
    assert!(
        groups > 0 && channels.is_multiple_of(groups),
        "group_norm_backward: channels % groups != 0"
    );
    assert!(
        x.len() == batch * channels * len && dout.len() == x.len(),
        "group_norm_backward: lengths"
    );
    assert!(
        mean.len() == batch * groups && rstd.len() == batch * groups && weight.len() == channels
    );
    let cg = channels / groups;
    let gsize = cg * len;
    if gsize == 0 {
        return;
    }
    if let Some(dx) = dx {
        assert_eq!(dx.len(), x.len(), "group_norm_backward: dx length");
        dx.par_chunks_mut(gsize).enumerate().for_each(|(bg, dxg)| {
            let (m, s) = (mean[bg], rstd[bg]);
            let c0 = (bg % groups) * cg;
            let xg = &x[bg * gsize..(bg + 1) * gsize];
            let dg = &dout[bg * gsize..(bg + 1) * gsize];
            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
            for ci in 0..cg {
                let w = weight[c0 + ci];
                let r = ci * len..(ci + 1) * len;
                let (sg, sgx) = sums_d_dxhat(&xg[r.clone()], &dg[r], m, s);
                sum_g += (sg * w) as f64;
                sum_gx += (sgx * w) as f64;
            }
            let mean_g = (sum_g / gsize as f64) as f32;
            let mean_gx = (sum_gx / gsize as f64) as f32;
            for ci in 0..cg {
                let w = weight[c0 + ci];
                let r = ci * len..(ci + 1) * len;
                for ((o, &xv), &d) in dxg[r.clone()].iter_mut().zip(&xg[r.clone()]).zip(&dg[r]) {
                    *o += s * (d * w - mean_g - (xv - m) * s * mean_gx);
                }
            }
        });
    }
    // Per-channel sums over batch and time; channels are independent, so parallel over them.
    let sums = |c: usize| -> (f32, f32) {
        let (mut sw, mut sb) = (0.0f32, 0.0f32);
        for b in 0..batch {
            let bg = b * groups + c / cg;
            let (m, s) = (mean[bg], rstd[bg]);
            let off = (b * channels + c) * len;
            let (g, gx) = sums_d_dxhat(&x[off..off + len], &dout[off..off + len], m, s);
            sw += gx;
            sb += g;
        }
        (sw, sb)
    };
    match (dweight, dbias) {
        (Some(dw), Some(db)) => {
            assert!(
                dw.len() == channels && db.len() == channels,
                "group_norm_backward: dweight/dbias"
            );
            dw.par_iter_mut()
                .zip(db.par_iter_mut())
                .enumerate()
                .for_each(|(c, (w, b))| {
                    let (sw, sb) = sums(c);
                    *w += sw;
                    *b += sb;
                });
        }
        (Some(dw), None) => {
            assert_eq!(dw.len(), channels, "group_norm_backward: dweight length");
            dw.par_iter_mut()
                .enumerate()
                .for_each(|(c, w)| *w += sums(c).0);
        }
        (None, Some(db)) => {
            assert_eq!(db.len(), channels, "group_norm_backward: dbias length");
            db.par_iter_mut()
                .enumerate()
                .for_each(|(c, b)| *b += sums(c).1);
        }
        (None, None) => {}
    }
}

/// (Σ d, Σ d·(x - m)·s) over one channel, in 16 interleaved lanes (a fixed order that vectorizes).
fn sums_d_dxhat(x: &[f32], d: &[f32], m: f32, s: f32) -> (f32, f32) {
    let (mut g, mut gx) = ([0.0f32; 16], [0.0f32; 16]);
    let (mut xc, mut dc) = (x.chunks_exact(16), d.chunks_exact(16));
    for (xs, ds) in (&mut xc).zip(&mut dc) {
        for i in 0..16 {
            g[i] += ds[i];
            gx[i] += ds[i] * (xs[i] - m) * s;
        }
    }
    let (mut tg, mut tgx) = (0.0f32, 0.0f32);
    for (&xv, &dv) in xc.remainder().iter().zip(dc.remainder()) {
        tg += dv;
        tgx += dv * (xv - m) * s;
    }
    (g.iter().sum::<f32>() + tg, gx.iter().sum::<f32>() + tgx)
}
