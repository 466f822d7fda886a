//! The binary's global allocator, installed here too: large blocks are recycled (same address for
//! the same layout), `alloc_zeroed` of a recycled block is all zeros, growth through realloc keeps
//! the contents, and concurrent use from rayon threads holds every value.

use culturemert_raw::alloc::RecyclingAlloc;
use rayon::prelude::*;

#[global_allocator]
static ALLOC: RecyclingAlloc = RecyclingAlloc::new();

const BIG: usize = 3 << 19; // 1.5M f32 = 6 MiB, above the 1 MiB threshold

#[test]
fn large_blocks_are_recycled_and_zeroed() {
    let a = vec![7.0f32; BIG];
    let pa = a.as_ptr() as usize;
    drop(a);
    let b = vec![0.0f32; BIG]; // alloc_zeroed: the recycled block, cleared
    assert_eq!(b.as_ptr() as usize, pa, "same layout, same block");
    assert!(b.iter().all(|&v| v == 0.0), "recycled block not zeroed");
    let mut c: Vec<f32> = Vec::with_capacity(BIG + 1); // another size: a new block
    assert_ne!(c.as_ptr() as usize, b.as_ptr() as usize);
    c.extend((0..BIG).map(|i| i as f32));
    c.reserve(4 * BIG); // realloc through the cache keeps the contents
    assert!(c.iter().enumerate().all(|(i, &v)| v == i as f32));
    let small = vec![1u8; 1000]; // below the threshold: the system allocator
    assert_eq!(small.iter().map(|&v| v as usize).sum::<usize>(), 1000);
}

#[test]
fn concurrent_allocations_keep_their_values() {
    for round in 0..4 {
        let sums: Vec<f64> = (0..64usize)
            .into_par_iter()
            .map(|i| {
                let n = (1 << 18) + 1024 * (i % 8); // 1 MiB and up, 8 sizes shared by tasks
                let v: Vec<f32> = (0..n).map(|j| ((i + j + round) % 7) as f32).collect();
                let z = vec![0.0f32; n];
                assert!(z.iter().all(|&x| x == 0.0));
                v.iter().map(|&x| x as f64).sum()
            })
            .collect();
        for (i, s) in sums.iter().enumerate() {
            let n = (1 << 18) + 1024 * (i % 8);
            let want: f64 = (0..n).map(|j| ((i + j + round) % 7) as f64).sum();
            assert_eq!(*s, want, "task {i} round {round}");
        }
    }
}
