//! Elementwise helpers used by the tape: add, scale, accumulate, batched transpose.

use rayon::prelude::*;

/// Below this many elements the loops run serially.
const PAR_MIN: usize = 1 << 16;

fn chunk(len: usize) -> usize {
    super::gemm::rows_per_task(len, PAR_MIN)
}

/// out = a + b
pub fn add_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    let _profile = super::profile::scope("add", 0.0);
    assert!(
        out.len() == a.len() && a.len() == b.len(),
        "add_forward: lengths differ"
    );
    let c = chunk(out.len());
    out.par_chunks_mut(c)
        .zip(a.par_chunks(c))
        .zip(b.par_chunks(c))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        });
}

/// out = alpha * x
pub fn scale_forward(out: &mut [f32], x: &[f32], alpha: f32) {
    assert_eq!(out.len(), x.len(), "scale_forward: lengths differ");
    let c = chunk(out.len());
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = alpha * x;
            }
        });
}

/// dst += src
pub fn accumulate(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "accumulate: lengths differ");
    let c = chunk(dst.len());
    dst.par_chunks_mut(c)
        .zip(src.par_chunks(c))
        .for_each(|(d, s)| {
            for (d, &s) in d.iter_mut().zip(s) {
                *d += s;
            }
        });
}

/// dst += alpha * src
pub fn accumulate_scaled(dst: &mut [f32], src: &[f32], alpha: f32) {
    assert_eq!(dst.len(), src.len(), "accumulate_scaled: lengths differ");
    let c = chunk(dst.len());
    dst.par_chunks_mut(c)
        .zip(src.par_chunks(c))
        .for_each(|(d, s)| {
            for (d, &s) in d.iter_mut().zip(s) {
                *d += alpha * s;
            }
        });
}

/// out[b, j, i] = x[b, i, j] for x [batch, rows, cols]. Tiled so both sides stay in cache.
pub fn transpose_last2(out: &mut [f32], x: &[f32], batch: usize, rows: usize, cols: usize) {
    let _profile = super::profile::scope("transpose", 0.0);
    let plane = rows * cols;
    assert_eq!(x.len(), batch * plane, "transpose_last2: x length");
    assert_eq!(out.len(), batch * plane, "transpose_last2: out length");
    if plane == 0 {
        return;
    }
    const TILE: usize = 32;
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .for_each(|(o, x)| {
            for i0 in (0..rows).step_by(TILE) {
                for j0 in (0..cols).step_by(TILE) {
                    for i in i0..(i0 + TILE).min(rows) {
                        for j in j0..(j0 + TILE).min(cols) {
                            o[j * rows + i] = x[i * cols + j];
                        }
                    }
                }
            }
        });
}
