//! LayerNorm over the last dim of x [rows, cols]: out = (x - mean) * rstd * weight + bias,
//! rstd = 1/sqrt(var + eps), biased variance. mean/rstd [rows] are saved for backward.

use super::gemm::rows_per_task;
use rayon::prelude::*;

/// Row statistics in f64 (two passes: the mean first, then the centred sum of squares).
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
) {
    let _profile = super::profile::scope("layer_norm fwd", 0.0);
    assert_eq!(x.len(), rows * cols, "layer_norm_forward: x length");
    assert_eq!(out.len(), rows * cols, "layer_norm_forward: out length");
    assert!(
        mean.len() == rows && rstd.len() == rows,
        "layer_norm_forward: stats length"
    );
    assert!(
        weight.len() == cols && bias.len() == cols,
        "layer_norm_forward: affine length"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let per = rows_per_task(rows, 16);
    out.par_chunks_mut(per * cols)
        .zip(x.par_chunks(per * cols))
        .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
        .for_each(|((out, x), (mean, rstd))| {
            for (r, (o, xr)) in out
                .chunks_exact_mut(cols)
                .zip(x.chunks_exact(cols))
                .enumerate()
            {
                let (m, s) = row_stats(xr, eps);
                mean[r] = m;
                rstd[r] = s;
                for (((o, &xv), &w), &b) in o.iter_mut().zip(xr).zip(weight).zip(bias) {
                    *o = (xv - m) * s * w + b;
                }
            }
        });
}

/// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dout * weight;
/// dweight += Σ_rows dout * xhat; dbias += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dx: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rows: usize,
    cols: usize,
) {
    let _profile = super::profile::scope("layer_norm bwd", 0.0);
    assert!(
        dout.len() == rows * cols && x.len() == rows * cols,
        "layer_norm_backward: lengths"
    );
    assert!(mean.len() == rows && rstd.len() == rows && weight.len() == cols);
    if rows == 0 || cols == 0 {
        return;
    }
    let per = rows_per_task(rows, 16);
    if let Some(dx) = dx {
        assert_eq!(dx.len(), rows * cols, "layer_norm_backward: dx length");
        dx.par_chunks_mut(per * cols)
            .enumerate()
            .for_each(|(t, dx)| {
                for (i, dxr) in dx.chunks_exact_mut(cols).enumerate() {
                    let r = t * per + i;
                    let (m, s) = (mean[r], rstd[r]);
                    let xr = &x[r * cols..(r + 1) * cols];
                    let dr = &dout[r * cols..(r + 1) * cols];
                    let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
                    for ((&xv, &d), &w) in xr.iter().zip(dr).zip(weight) {
                        let g = (d * w) as f64;
                        sum_g += g;
                        sum_gx += g * ((xv - m) * s) as f64;
                    }
                    let mean_g = (sum_g / cols as f64) as f32;
                    let mean_gx = (sum_gx / cols as f64) as f32;
                    for (((o, &xv), &d), &w) in dxr.iter_mut().zip(xr).zip(dr).zip(weight) {
                        let xhat = (xv - m) * s;
                        *o += s * (d * w - mean_g - xhat * mean_gx);
                    }
                }
            });
    }
    if dweight.is_none() && dbias.is_none() {
        return;
    }
    // Column sums: each task reduces a block of rows into its own partial, then partials are added.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let (mut dw, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            for r in t * per..((t + 1) * per).min(rows) {
                let (m, s) = (mean[r], rstd[r]);
                let xr = &x[r * cols..(r + 1) * cols];
                let dr = &dout[r * cols..(r + 1) * cols];
                for (((w, b), &xv), &d) in dw.iter_mut().zip(db.iter_mut()).zip(xr).zip(dr) {
                    *w += d * (xv - m) * s;
                    *b += d;
                }
            }
            (dw, db)
        })
        .collect();
    if let Some(dweight) = dweight {
        assert_eq!(dweight.len(), cols, "layer_norm_backward: dweight length");
        for (pw, _) in &partials {
            dweight.iter_mut().zip(pw).for_each(|(a, &b)| *a += b);
        }
    }
    if let Some(dbias) = dbias {
        assert_eq!(dbias.len(), cols, "layer_norm_backward: dbias length");
        for (_, pb) in &partials {
            dbias.iter_mut().zip(pb).for_each(|(a, &b)| *a += b);
        }
    }
}
