//! Mean over time of the first lengths[b] frames: x [B, T, C] -> out [B, C].
//! A zero length gives a zero row (and no gradient).

pub fn mean_pool_time_forward(
    out: &mut [f32],
    x: &[f32],
    lengths: &[usize],
    batch: usize,
    seq: usize,
    channels: usize,
) {
    let _profile = super::profile::scope("mean_pool fwd", 0.0);
    assert_eq!(
        x.len(),
        batch * seq * channels,
        "mean_pool_time_forward: x length"
    );
    assert_eq!(
        out.len(),
        batch * channels,
        "mean_pool_time_forward: out length"
    );
    assert_eq!(
        lengths.len(),
        batch,
        "mean_pool_time_forward: lengths length"
    );
    for b in 0..batch {
        let len = lengths[b];
        assert!(
            len <= seq,
            "mean_pool_time_forward: length {len} > seq {seq}"
        );
        let mut acc = vec![0.0f64; channels];
        for frame in x[b * seq * channels..].chunks_exact(channels).take(len) {
            acc.iter_mut().zip(frame).for_each(|(a, &v)| *a += v as f64);
        }
        let inv = if len > 0 { 1.0 / len as f64 } else { 0.0 };
        for (o, a) in out[b * channels..(b + 1) * channels].iter_mut().zip(&acc) {
            *o = (a * inv) as f32;
        }
    }
}

/// dx[b, t, c] += dout[b, c] / lengths[b] for t < lengths[b].
pub fn mean_pool_time_backward(
    dx: &mut [f32],
    dout: &[f32],
    lengths: &[usize],
    batch: usize,
    seq: usize,
    channels: usize,
) {
    let _profile = super::profile::scope("mean_pool bwd", 0.0);
    assert_eq!(
        dx.len(),
        batch * seq * channels,
        "mean_pool_time_backward: dx length"
    );
    assert_eq!(
        dout.len(),
        batch * channels,
        "mean_pool_time_backward: dout length"
    );
    assert_eq!(
        lengths.len(),
        batch,
        "mean_pool_time_backward: lengths length"
    );
    for b in 0..batch {
        let len = lengths[b];
        assert!(
            len <= seq,
            "mean_pool_time_backward: length {len} > seq {seq}"
        );
        if len == 0 {
            continue;
        }
        let inv = 1.0 / len as f32;
        let d = &dout[b * channels..(b + 1) * channels];
        for frame in dx[b * seq * channels..]
            .chunks_exact_mut(channels)
            .take(len)
        {
            frame.iter_mut().zip(d).for_each(|(o, &g)| *o += g * inv);
        }
    }
}
