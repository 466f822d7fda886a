//! torch weight_norm: w = g · v / ||v||, the norm taken over every axis of v [d0, d1, d2] except
//! `dim`; g and `norms` have dims[dim] entries. dim = 0: one norm per output row;
//! dim = 2: one norm per kernel tap (the HuBERT/MERT positional conv). dim = 1 works the same way.

use rayon::prelude::*;

/// Element e of v belongs to slot (e / stride) % dims[dim], stride = product of the later dims.
fn slot_stride(dims: [usize; 3], dim: usize) -> usize {
    assert!(dim < 3, "weight_norm: dim must be 0, 1 or 2");
    dims[dim + 1..].iter().product()
}

/// Σ v² per slot in f64: parallel over blocks of d0, partial sums added at the end.
fn sum_squares(v: &[f32], dims: [usize; 3], dim: usize) -> Vec<f64> {
    let (n, stride) = (dims[dim], slot_stride(dims, dim));
    let row = dims[1] * dims[2];
    if row == 0 {
        return vec![0.0; n];
    }
    v.par_chunks(row)
        .enumerate()
        .fold(
            || vec![0.0f64; n],
            |mut acc, (ri, r)| {
                for (e, &x) in r.iter().enumerate() {
                    acc[((ri * row + e) / stride) % n] += x as f64 * x as f64;
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; n],
            |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        )
}

/// w = g · v / ||v||; norms[s] = ||v restricted to slot s||.
pub fn weight_norm_forward(
    w: &mut [f32],
    norms: &mut [f32],
    g: &[f32],
    v: &[f32],
    dims: [usize; 3],
    dim: usize,
) {
    let _profile = super::profile::scope("weight_norm fwd", 0.0);
    let total: usize = dims.iter().product();
    let stride = slot_stride(dims, dim);
    let n = dims[dim];
    assert!(
        v.len() == total && w.len() == total,
        "weight_norm_forward: v/w length"
    );
    assert!(
        g.len() == n && norms.len() == n,
        "weight_norm_forward: g/norms length"
    );
    if dim == 0 {
        let row = dims[1] * dims[2];
        if row == 0 {
            return;
        }
        w.par_chunks_mut(row)
            .zip(v.par_chunks(row))
            .zip(norms.par_iter_mut())
            .enumerate()
            .for_each(|(i, ((wr, vr), nr))| {
                let norm = vr.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
                *nr = norm;
                let scale = g[i] / norm;
                wr.iter_mut().zip(vr).for_each(|(o, &x)| *o = x * scale);
            });
        return;
    }
    let ss = sum_squares(v, dims, dim);
    for (nr, s) in norms.iter_mut().zip(&ss) {
        *nr = s.sqrt() as f32;
    }
    let scales: Vec<f32> = g
        .iter()
        .zip(norms.iter())
        .map(|(&gs, &ns)| gs / ns)
        .collect();
    w.par_iter_mut()
        .zip(v.par_iter())
        .enumerate()
        .for_each(|(e, (o, &x))| {
            *o = x * scales[(e / stride) % n];
        });
}

/// With c_s = Σ_slot dw·v: dg[s] += c_s / n_s;  dv += (g_s / n_s) dw - (g_s c_s / n_s³) v.
#[allow(clippy::too_many_arguments)]
pub fn weight_norm_backward(
    dg: Option<&mut [f32]>,
    dv: Option<&mut [f32]>,
    dw: &[f32],
    g: &[f32],
    v: &[f32],
    norms: &[f32],
    dims: [usize; 3],
    dim: usize,
) {
    let _profile = super::profile::scope("weight_norm bwd", 0.0);
    let total: usize = dims.iter().product();
    let stride = slot_stride(dims, dim);
    let n = dims[dim];
    assert!(
        v.len() == total && dw.len() == total,
        "weight_norm_backward: v/dw length"
    );
    assert!(
        g.len() == n && norms.len() == n,
        "weight_norm_backward: g/norms length"
    );
    if dg.is_none() && dv.is_none() {
        return;
    }
    let slot = |e: usize| (e / stride) % n;
    // c_s = Σ dw·v per slot (f64), parallel over blocks of elements.
    let block = 1 << 14;
    let c: Vec<f64> = dw
        .par_chunks(block)
        .zip(v.par_chunks(block))
        .enumerate()
        .fold(
            || vec![0.0f64; n],
            |mut acc, (bi, (dwb, vb))| {
                for (i, (&a, &b)) in dwb.iter().zip(vb).enumerate() {
                    acc[slot(bi * block + i)] += a as f64 * b as f64;
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; n],
            |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        );
    if let Some(dg) = dg {
        assert_eq!(dg.len(), n, "weight_norm_backward: dg length");
        for ((d, &cs), &ns) in dg.iter_mut().zip(&c).zip(norms) {
            *d += (cs / ns as f64) as f32;
        }
    }
    if let Some(dv) = dv {
        assert_eq!(dv.len(), total, "weight_norm_backward: dv length");
        let a: Vec<f32> = g.iter().zip(norms).map(|(&gs, &ns)| gs / ns).collect();
        let bcoef: Vec<f32> = (0..n)
            .map(|s| (g[s] as f64 * c[s] / (norms[s] as f64).powi(3)) as f32)
            .collect();
        dv.par_iter_mut()
            .zip(dw.par_iter().zip(v.par_iter()))
            .enumerate()
            .for_each(|(e, (o, (&d, &x)))| {
                let s = slot(e);
                *o += a[s] * d - bcoef[s] * x;
            });
    }
}
