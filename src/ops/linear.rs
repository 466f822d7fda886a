//! nn.Linear: out[rows, out_features] = x[rows, in_features] · weightᵀ + bias,
//! weight stored PyTorch-style as [out_features, in_features].

use super::gemm::sgemm;

pub fn linear_forward(
    out: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    in_features: usize,
    out_features: usize,
) {
    let _profile = super::profile::scope(
        "linear fwd",
        2.0 * (rows * in_features * out_features) as f64,
    );
    assert_eq!(out.len(), rows * out_features, "linear_forward: out length");
    match bias {
        Some(bias) => {
            assert_eq!(bias.len(), out_features, "linear_forward: bias length");
            for row in out.chunks_exact_mut(out_features) {
                row.copy_from_slice(bias);
            }
            sgemm(
                rows,
                out_features,
                in_features,
                x,
                false,
                weight,
                true,
                out,
                true,
            );
        }
        None => sgemm(
            rows,
            out_features,
            in_features,
            x,
            false,
            weight,
            true,
            out,
            false,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dx: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    rows: usize,
    in_features: usize,
    out_features: usize,
) {
    let _profile = super::profile::scope(
        "linear bwd",
        (dx.is_some() as usize + dweight.is_some() as usize) as f64
            * 2.0
            * (rows * in_features * out_features) as f64,
    );
    assert_eq!(
        dout.len(),
        rows * out_features,
        "linear_backward: dout length"
    );
    // dx += dout · W
    if let Some(dx) = dx {
        sgemm(
            rows,
            in_features,
            out_features,
            dout,
            false,
            weight,
            false,
            dx,
            true,
        );
    }
    // dW += doutᵀ · x
    if let Some(dweight) = dweight {
        sgemm(
            out_features,
            in_features,
            rows,
            dout,
            true,
            x,
            false,
            dweight,
            true,
        );
    }
    if let Some(dbias) = dbias {
        assert_eq!(dbias.len(), out_features, "linear_backward: dbias length");
        for row in dout.chunks_exact(out_features) {
            for (db, &d) in dbias.iter_mut().zip(row) {
                *db += d;
            }
        }
    }
}
