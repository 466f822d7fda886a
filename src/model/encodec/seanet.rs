//! SEANet encoder convolutions of EnCodec: weight-normed Conv1d with causal reflect padding, ELU and
//! the residual block. Activations are [channels, len] row-major (one track, no batch).

use crate::ops::conv1d::{conv1d_forward, Conv1dShape};

/// One `EncodecConv1d` with its weight norm already folded into `weight`.
#[derive(Clone, Debug)]
pub struct SConv1d {
    /// [out, in, k_eff]: a dilated kernel is stored expanded (zeros between the taps), so the plain
    /// conv op computes it exactly (the inserted taps add x * 0 = 0).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Effective kernel (k - 1) * dilation + 1.
    pub kernel: usize,
    pub stride: usize,
}

impl SConv1d {
    /// `weight` [out, in, k] (weight norm applied), expanded for `dilation`.
    pub fn new(
        weight: &[f32],
        bias: Vec<f32>,
        shape: [usize; 3],
        stride: usize,
        dilation: usize,
    ) -> Self {
        let [out_channels, in_channels, k] = shape;
        let kernel = (k - 1) * dilation + 1;
        let weight = if dilation == 1 {
            weight.to_vec()
        } else {
            let mut w = vec![0.0f32; out_channels * in_channels * kernel];
            for (row, src) in w.chunks_exact_mut(kernel).zip(weight.chunks_exact(k)) {
                for (j, &v) in src.iter().enumerate() {
                    row[j * dilation] = v;
                }
            }
            w
        };
        SConv1d {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
        }
    }

    /// Output frames for `len` input samples: ceil(len / stride).
    pub fn out_len(&self, len: usize) -> usize {
        len.div_ceil(self.stride)
    }

    /// x [in, len] -> [out, ceil(len / stride)].
    pub fn forward(&self, x: &[f32], len: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.in_channels * len);
        let (padded, plen) = causal_reflect_pad(x, self.in_channels, len, self.kernel, self.stride);
        let s = Conv1dShape {
            batch: 1,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            in_len: plen,
            kernel: self.kernel,
            stride: self.stride,
            padding: 0,
            groups: 1,
        };
        debug_assert_eq!(s.out_len(), self.out_len(len));
        let mut out = vec![0.0f32; self.out_channels * s.out_len()];
        conv1d_forward(&mut out, &padded, &self.weight, Some(&self.bias), &s);
        out
    }
}

/// EnCodec's causal padding of x [channels, len] for a conv of effective kernel `k_eff`:
/// left `k_eff - stride`, right `extra` so that the last window is complete. HF computes
/// extra = (ceil((len - k_eff + pad_left)/stride + 1) - 1)*stride + k_eff - pad_left - len, which
/// simplifies (pad_left = k_eff - stride) to ceil(len/stride)*stride - len.
/// Both sides reflect; when len <= max(pad) (too short to reflect) the row is first zero-extended
/// on the right to max_pad + 1, reflected, and the padded row cut back by that extension.
pub fn causal_reflect_pad(
    x: &[f32],
    channels: usize,
    len: usize,
    k_eff: usize,
    stride: usize,
) -> (Vec<f32>, usize) {
    let left = k_eff - stride;
    let right = len.div_ceil(stride) * stride - len;
    let max_pad = left.max(right);
    let ext = if len <= max_pad { max_pad - len + 1 } else { 0 };
    let elen = len + ext; // row length after the zero extension
    let out_len = left + len + right; // reflected length left+elen+right, minus ext at the end
    let mut out = vec![0.0f32; channels * out_len];
    for (row, src) in out.chunks_exact_mut(out_len).zip(x.chunks_exact(len)) {
        let at = |j: usize| if j < len { src[j] } else { 0.0 };
        // position i-left in the extended row, reflected about its first and last sample
        let reflect = |i: usize| {
            let j = i as isize - left as isize;
            if j < 0 {
                at((-j) as usize)
            } else if j as usize >= elen {
                at(2 * (elen - 1) - j as usize)
            } else {
                at(j as usize)
            }
        };
        row[left..left + len].copy_from_slice(src);
        for i in (0..left).chain(left + len..out_len) {
            row[i] = reflect(i);
        }
    }
    (out, out_len)
}

/// ELU(alpha = 1) in place: x for x > 0, exp(x) - 1 otherwise.
pub fn elu_inplace(x: &mut [f32]) {
    for v in x.iter_mut() {
        if *v <= 0.0 {
            *v = v.exp_m1();
        }
    }
}

pub fn elu(x: &[f32]) -> Vec<f32> {
    let mut y = x.to_vec();
    elu_inplace(&mut y);
    y
}

/// SEANet residual block: y = shortcut(x) + conv_b(ELU(conv_a(ELU(x)))), conv_a dim -> dim/compress
/// (residual kernel, dilated), conv_b back to dim (kernel 1); the shortcut is a 1x1 conv or identity.
#[derive(Clone, Debug)]
pub struct ResBlock {
    pub conv_a: SConv1d,
    pub conv_b: SConv1d,
    pub shortcut: Option<SConv1d>,
}

impl ResBlock {
    pub fn forward(&self, x: &[f32], len: usize) -> Vec<f32> {
        let h = self.conv_a.forward(&elu(x), len);
        let mut y = self.conv_b.forward(&elu(&h), len);
        match &self.shortcut {
            Some(sc) => {
                let s = sc.forward(x, len);
                for (a, b) in y.iter_mut().zip(&s) {
                    *a += *b;
                }
            }
            None => {
                for (a, b) in y.iter_mut().zip(x) {
                    *a += *b;
                }
            }
        }
        y
    }
}
