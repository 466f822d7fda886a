//! Per-op wall time of the CPU ops, for `bench --profile`. Off by default: `scope` then costs one
//! relaxed atomic load. When on, each instrumented op entry point (forward and backward of every
//! family) adds its wall time, call count and analytic FLOPs to a table keyed by name. Only the
//! outermost instrumented call on a thread counts (an op calling another op is not counted twice).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<OpStat>> = Mutex::new(Vec::new());

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Totals of one op name since the last `take`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpStat {
    pub name: &'static str,
    pub calls: u64,
    pub seconds: f64,
    /// Analytic floating-point operations (multiply-add = 2); 0 for ops counted in bytes only.
    pub flops: f64,
}

/// Turns recording on or off (the table keeps what it has).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The table since the last call, in first-seen order, and clears it.
pub fn take() -> Vec<OpStat> {
    std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Times the enclosing op until the guard drops; None (free) when profiling is off or this call is
/// nested inside another instrumented op on the same thread.
pub fn scope(name: &'static str, flops: f64) -> Option<Scope> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Some(Scope {
        name,
        flops,
        start: Instant::now(),
        outermost,
    })
}

pub struct Scope {
    name: &'static str,
    flops: f64,
    start: Instant,
    outermost: bool,
}

impl Drop for Scope {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
        if !self.outermost {
            return;
        }
        let seconds = self.start.elapsed().as_secs_f64();
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        match table.iter_mut().find(|s| s.name == self.name) {
            Some(s) => {
                s.calls += 1;
                s.seconds += seconds;
                s.flops += self.flops;
            }
            None => table.push(OpStat {
                name: self.name,
                calls: 1,
                seconds,
                flops: self.flops,
            }),
        }
    }
}
