//! f32 matrix multiply on the `gemm` crate, plus the global thread count used by every CPU op.
//!
//! `sgemm` is the contract entry point (BLAS-like transposes on contiguous row-major storage);
//! `sgemm_strided` is the general form (arbitrary row/column strides on all three matrices, used by
//! attention to address one head's columns in place) and can be forced single-threaded when called
//! from inside a rayon task.

use gemm::{gemm, Parallelism};
use std::sync::atomic::{AtomicUsize, Ordering};

/// 0 = not set: use the machine's available parallelism.
static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Below this many multiply-adds a GEMM runs on one thread (spawning costs more than it saves).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Sets the thread count used by all CPU ops (values < 1 are treated as 1).
pub fn set_num_threads(n: usize) {
    NUM_THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The thread count used by all CPU ops (default: available parallelism).
pub fn num_threads() -> usize {
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Rows per rayon task so that `rows` split into at most `num_threads()` tasks of at least
/// `min_rows` rows each (one task = serial). Used by the row-parallel ops.
pub fn rows_per_task(rows: usize, min_rows: usize) -> usize {
    let per = rows.div_ceil(num_threads().max(1));
    per.max(min_rows).max(1)
}

/// C[m,n] (= or += if `accumulate`) op(A)·op(B); A stored [m,k] row-major (or [k,m] when `a_trans`),
/// B stored [k,n] (or [n,k] when `b_trans`), C stored [m,n].
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(
        a.len(),
        m * k,
        "sgemm: A has {} values, expected m*k = {}",
        a.len(),
        m * k
    );
    assert_eq!(
        b.len(),
        k * n,
        "sgemm: B has {} values, expected k*n = {}",
        b.len(),
        k * n
    );
    assert_eq!(
        c.len(),
        m * n,
        "sgemm: C has {} values, expected m*n = {}",
        c.len(),
        m * n
    );
    let (a_rs, a_cs) = if a_trans { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_trans { (1, k) } else { (n, 1) };
    let a = MatRef {
        data: a,
        row_stride: a_rs,
        col_stride: a_cs,
    };
    let b = MatRef {
        data: b,
        row_stride: b_rs,
        col_stride: b_cs,
    };
    sgemm_strided(m, n, k, 1.0, a, b, c, n, 1, accumulate, true);
}

/// A read-only strided matrix view: element (i, j) is `data[i*row_stride + j*col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// General strided GEMM: C[i,j] (= or +=) alpha * Σ_p A[i,p] B[p,j], with C element (i, j) at
/// `c[i*c_rs + j*c_cs]`. `parallel = false` forces one thread (for calls inside rayon tasks).
/// C's strides must not make distinct (i, j) alias (checked only for the extent here).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        max_index(m, n, c_rs, c_cs) < c.len(),
        "sgemm_strided: C too short"
    );
    // SAFETY: every index touched lies within the slices (checked above); `c` is borrowed mutably.
    unsafe {
        sgemm_strided_raw(
            m,
            n,
            k,
            alpha,
            a,
            b,
            c.as_mut_ptr(),
            c_rs,
            c_cs,
            accumulate,
            parallel,
        )
    }
}

/// `sgemm_strided` writing through a raw pointer (for parallel tasks writing disjoint strided
/// blocks of one buffer, e.g. one attention head's columns). A and B extents are checked.
///
/// # Safety
/// `c` must be valid for reads and writes at every `i*c_rs + j*c_cs` (i < m, j < n), and no other
/// thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_strided_raw(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *c.add(i * c_rs + j * c_cs) = 0.0;
                }
            }
        }
        return;
    }
    assert!(
        max_index(m, k, a.row_stride, a.col_stride) < a.data.len(),
        "sgemm: A too short"
    );
    assert!(
        max_index(k, n, b.row_stride, b.col_stride) < b.data.len(),
        "sgemm: B too short"
    );
    let threads = num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k >= PARALLEL_MIN_MACS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // The gemm crate computes dst := alpha_dst*dst + beta*lhs*rhs, reading dst only if read_dst.
    gemm(
        m,
        n,
        k,
        c,
        c_cs as isize,
        c_rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.col_stride as isize,
        a.row_stride as isize,
        b.data.as_ptr(),
        b.col_stride as isize,
        b.row_stride as isize,
        1.0,
        alpha,
        false,
        false,
        false,
        parallelism,
    );
}
