//! `bench --profile`'s per-op table: nesting counted once, analytic FLOPs of real op calls, nothing
//! recorded while off. Its own test binary: the table is process-global.

use culturemert_raw::ops::conv1d::{conv1d_forward, Conv1dShape};
use culturemert_raw::ops::linear::linear_forward;
use culturemert_raw::ops::profile;

#[test]
fn profile_counts_outermost_ops_with_their_flops() {
    profile::enable(true);
    {
        let _outer = profile::scope("outer", 10.0);
        let _inner = profile::scope("inner", 5.0);
    }
    let (rows, inf, outf) = (7, 5, 3);
    let mut out = vec![0.0; rows * outf];
    for _ in 0..2 {
        linear_forward(
            &mut out,
            &vec![1.0; rows * inf],
            &vec![0.5; outf * inf],
            None,
            rows,
            inf,
            outf,
        );
    }
    let s = Conv1dShape {
        batch: 2,
        in_channels: 4,
        out_channels: 6,
        in_len: 20,
        kernel: 3,
        stride: 2,
        padding: 1,
        groups: 2,
    };
    let mut y = vec![0.0; 2 * 6 * s.out_len()];
    conv1d_forward(&mut y, &vec![1.0; 2 * 4 * 20], &[1.0; 6 * 2 * 3], None, &s);
    profile::enable(false);
    let mut out2 = vec![0.0; rows * outf];
    linear_forward(
        &mut out2,
        &vec![1.0; rows * inf],
        &vec![0.5; outf * inf],
        None,
        rows,
        inf,
        outf,
    );

    let table = profile::take();
    let names: Vec<&str> = table.iter().map(|s| s.name).collect();
    assert_eq!(names, ["outer", "linear fwd", "conv1d fwd"], "{table:?}");
    assert_eq!((table[0].calls, table[0].flops), (1, 10.0));
    // 2 calls of 2 * rows * in * out multiply-adds; the call made while off is not counted
    assert_eq!(
        (table[1].calls, table[1].flops),
        (2, 2.0 * 2.0 * (rows * inf * outf) as f64)
    );
    // out_len = (20 + 2 - 3) / 2 + 1 = 10; 2 * B * Cout * Lout * (Cin / G) * K
    assert_eq!(s.out_len(), 10);
    assert_eq!(table[2].flops, 2.0 * (2 * 6 * 10 * 2 * 3) as f64);
    assert!(table.iter().all(|s| s.seconds >= 0.0));
    assert!(profile::take().is_empty(), "take clears the table");
}
