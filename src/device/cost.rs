//! Analytic cost of one recorded launch: FLOPs (multiply-add = 2) and the minimum bytes it must move
//! through DRAM, from the kernel's name and its scalar arguments / buffer lengths. One rule per kernel
//! family; a kernel without a rule has no cost (shown as "?"), never an invented one.
//!
//! Bytes are the compulsory traffic: every input read once, every output written once (accumulating
//! outputs read and written), caches assumed perfect. FLOPs count the arithmetic the kernel really
//! does, including what backward kernels recompute (attention's S = QKᵀ, NCE's logits).

use super::kernel::ArgDesc;
use super::profile::LaunchRecord;

/// Which peak bounds a kernel's arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// bf16 / f16 tensor cores with f32 accumulation (mma.sync).
    TensorHalf,
    /// f32 on the CUDA cores (FMA).
    F32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
    pub unit: Unit,
}

/// The integer scalar arguments in order.
fn ints(rec: &LaunchRecord) -> Vec<f64> {
    rec.args
        .iter()
        .filter_map(|a| match a {
            ArgDesc::Int(v) => Some(*v as f64),
            _ => None,
        })
        .collect()
}

/// Bytes of the buffer arguments in order.
fn bufs(rec: &LaunchRecord) -> Vec<f64> {
    rec.args
        .iter()
        .filter_map(|a| match a {
            ArgDesc::Buf { len, elem } => Some((len * elem) as f64),
            _ => None,
        })
        .collect()
}

/// Every buffer argument read or written once, plus table-indirect traffic.
fn streaming(rec: &LaunchRecord) -> f64 {
    bufs(rec).iter().sum::<f64>() + rec.indirect_bytes as f64
}

/// Elements of the first buffer (the output of the elementwise kernels).
fn first_len(rec: &LaunchRecord) -> f64 {
    match rec.args.first() {
        Some(ArgDesc::Buf { len, .. }) => *len as f64,
        _ => 0.0,
    }
}

/// Memory-bound kernels whose traffic is their buffer arguments, each touched once; `flops_per_elem`
/// counts the arithmetic per element of the first buffer.
const STREAMING: &[(&str, f64)] = &[
    ("add_f32", 1.0),
    ("scale_f32", 1.0),
    ("gelu_forward_f32", 8.0),
    ("gelu_backward_f32", 12.0),
    ("relu_forward_f32", 1.0),
    ("relu_backward_f32", 2.0),
    ("dropout_apply_f32", 2.0),
    ("cast_f32_to_bf16", 0.0),
    ("cast_f32_to_f16", 0.0),
    ("cast_bf16_to_f32", 0.0),
    ("cast_f16_to_f32", 0.0),
    ("fill_f32", 0.0),
    ("copy_f32", 0.0),
    ("add_scaled_f32", 2.0),
    ("transpose_last2_f32", 0.0),
    ("narrow_last_f32", 0.0),
    ("narrow_last_backward_f32", 0.0),
    ("mask_rows_f32", 0.0),
    ("replace_masked_rows_forward_f32", 0.0),
    ("replace_masked_rows_backward_dx_f32", 0.0),
    ("replace_masked_rows_backward_demb_f32", 1.0),
    ("mean_pool_time_forward_f32", 1.0),
    ("mean_pool_time_backward_f32", 1.0),
    ("gather_rows_f32", 0.0),
    ("gather_rows_backward_f32", 1.0),
    ("squared_error_partials_f32", 3.0),
    ("squared_error_backward_f32", 3.0),
    ("layer_norm_forward_f32", 8.0),
    ("layer_norm_backward_dx_f32", 10.0),
    ("layer_norm_backward_params_f32", 4.0),
    ("group_norm_forward_f32", 8.0),
    ("group_norm_backward_dx_f32", 10.0),
    ("group_norm_backward_params_f32", 4.0),
    ("column_sum_f32", 1.0),
    ("sum_partials_f32", 1.0),
    ("conv1d_backward_dbias_f32", 0.0),
    ("weight_norm_forward_rows_f32", 3.0),
    ("weight_norm_forward_cols_f32", 3.0),
    ("weight_norm_backward_rows_f32", 6.0),
    ("weight_norm_backward_cols_f32", 6.0),
    ("nce_codeword_inv_norms_f32", 0.0),
    ("attention_backward_delta_f32", 0.0),
    ("adamw_step_f32", 0.0),
    ("global_norm_finish_f32", 0.0),
];

/// The cost of one launch, or None for a kernel without a rule.
pub fn launch_cost(rec: &LaunchRecord) -> Option<Cost> {
    let name = rec.kernel;
    let i = ints(rec);
    let b = bufs(rec);
    let f32c = |flops: f64, bytes: f64| Cost {
        flops,
        bytes,
        unit: Unit::F32,
    };
    let tc = |flops: f64, bytes: f64| Cost {
        flops,
        bytes,
        unit: Unit::TensorHalf,
    };
    if name.starts_with("gemm_f32_") || name.starts_with("gemm_tc_") {
        // (C, A, B, bias, M, N, K, [a_trans, b_trans,] accumulate)
        if i.len() < 4 || b.len() < 4 {
            return None;
        }
        let (m, n, k, acc) = (i[0], i[1], i[2], *i.last()? != 0.0);
        let half = name.starts_with("gemm_tc_");
        let ab = if half { 2.0 } else { 4.0 };
        let bytes = ab * (m * k + k * n) + 4.0 * m * n * (1.0 + acc as u8 as f64) + b[3];
        let flops = 2.0 * m * n * k;
        return Some(if half {
            tc(flops, bytes)
        } else {
            f32c(flops, bytes)
        });
    }
    if let Some(dir) = name.strip_prefix("conv1d_") {
        if dir.starts_with("forward")
            || dir.starts_with("backward_dx")
            || dir == "backward_dweight_f32"
            || dir == "backward_dweight_small_f32"
        {
            // (B, Cin, Cout, Lin, Lout, K, stride, pad, G)
            if i.len() < 9 {
                return None;
            }
            let (bb, cin, cout, lin, lout, k, g) = (i[0], i[1], i[2], i[3], i[4], i[5], i[8]);
            let flops = 2.0 * bb * cout * lout * (cin / g) * k;
            let bytes = 4.0 * (bb * cin * lin + cout * (cin / g) * k + bb * cout * lout);
            return Some(f32c(flops, bytes));
        }
    }
    if let Some(c) = name
        .strip_prefix("attention_")
        .and_then(|rest| attention_cost(rest, rec, &i))
    {
        return Some(c);
    }
    if name.starts_with("nce_loss_") {
        // (N, K, C, D): one logit is a D-long dot product.
        if i.len() < 4 {
            return None;
        }
        let (n, k, c, d) = (i[0], i[1], i[2], i[3]);
        let dots = 2.0 * n * k * c * d;
        let passes = match name {
            "nce_loss_forward_f32" => 1.0,
            "nce_loss_backward_rows_f32" => 2.0, // logits again, then dpred
            _ => 1.0,                            // codewords: g^T a^
        };
        return Some(f32c(passes * dots, streaming(rec)));
    }
    if name == "global_norm_partials_f32" {
        return (rec.indirect_bytes > 0).then(|| f32c(0.0, streaming(rec)));
    }
    let &(_, per_elem) = STREAMING.iter().find(|(n, _)| *n == name)?;
    Some(f32c(per_elem * first_len(rec), streaming(rec)))
}

/// Flash attention: forward one QKᵀ and one PV product; backward dq recomputes S, then dP = dO Vᵀ and
/// dQ = dS K (3 products); dkv recomputes S, then dV, dP, dK (4 products). Each product 2 B H T² D.
fn attention_cost(rest: &str, rec: &LaunchRecord, i: &[f64]) -> Option<Cost> {
    if i.len() < 2 + usize::from(!rest.starts_with("tc_")) {
        return None;
    }
    let tensor = rest.starts_with("tc_");
    let rest = rest.strip_prefix("tc_").unwrap_or(rest);
    let (t, h) = (i[0], i[1]);
    let d = if tensor { 64.0 } else { i[2] };
    // q (f32) or the half q: the third buffer of the forward kernels, the fourth of dq / dkv.
    let q_index = match rest {
        r if r.starts_with("forward") => 2,
        r if r.starts_with("backward_dq") => 2,
        r if r.starts_with("backward_dkv") => 3,
        _ => return None, // backward_delta is a streaming kernel (table above)
    };
    let len = rec
        .args
        .iter()
        .filter_map(|a| match a {
            ArgDesc::Buf { len, .. } => Some(*len as f64),
            _ => None,
        })
        .nth(q_index)?;
    let batch = (len / (t * h * d)).round();
    let product = 2.0 * batch * h * t * t * d;
    let products = if rest.starts_with("forward") {
        2.0
    } else if rest.starts_with("backward_dq") {
        3.0
    } else {
        4.0
    };
    Some(Cost {
        flops: products * product,
        bytes: streaming(rec),
        unit: if tensor { Unit::TensorHalf } else { Unit::F32 },
    })
}
