//! `bench-device --profile`: the launches of one training step grouped per kernel, with GPU time from
//! CUDA events (driver) or only the analytic cost (dry run, emulator), and the roofline bound of each
//! kernel from `device::cost` and `device::roofline`.

use crate::device::cost::{launch_cost, Unit};
use crate::device::roofline::Peaks;
use crate::device::LaunchRecord;

/// One kernel's launches in a step.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub kernel: &'static str,
    pub launches: usize,
    /// Sum of the launches' GPU times (None without events).
    pub gpu_ms: Option<f64>,
    /// FLOPs and bytes summed over the launches; None when any launch has no cost rule.
    pub flops: Option<f64>,
    pub bytes: Option<f64>,
    pub unit: Option<Unit>,
    /// Sum over launches of the roofline bound (seconds), one entry per GPU in `peaks`.
    pub bound_s: Vec<Option<f64>>,
    /// Largest grid of any launch, in blocks.
    pub max_blocks: u64,
}

/// Groups `records` by kernel, in order of GPU time (when timed) or of the first GPU's bound.
pub fn aggregate(records: &[LaunchRecord], peaks: &[Peaks]) -> Vec<KernelRow> {
    let mut rows: Vec<KernelRow> = Vec::new();
    for rec in records {
        let cost = launch_cost(rec);
        let idx = match rows.iter().position(|r| r.kernel == rec.kernel) {
            Some(i) => i,
            None => {
                rows.push(KernelRow {
                    kernel: rec.kernel,
                    launches: 0,
                    gpu_ms: rec.gpu_ms.map(|_| 0.0),
                    flops: Some(0.0),
                    bytes: Some(0.0),
                    unit: cost.map(|c| c.unit),
                    bound_s: vec![Some(0.0); peaks.len()],
                    max_blocks: 0,
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[idx];
        row.launches += 1;
        row.max_blocks = row.max_blocks.max(rec.blocks());
        row.gpu_ms = row.gpu_ms.zip(rec.gpu_ms).map(|(a, b)| a + b);
        row.flops = row.flops.zip(cost).map(|(a, c)| a + c.flops);
        row.bytes = row.bytes.zip(cost).map(|(a, c)| a + c.bytes);
        for (b, p) in row.bound_s.iter_mut().zip(peaks) {
            *b = b.zip(cost).map(|(a, c)| a + p.bound_s(&c));
        }
    }
    let key = |r: &KernelRow| {
        r.gpu_ms.unwrap_or(0.0) * 1e-3 + r.bound_s.first().copied().flatten().unwrap_or(0.0)
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.kernel.cmp(b.kernel)));
    rows
}

/// Sum of the rows' bounds for GPU `g` (kernels without a cost rule excluded) and how many such rows.
pub fn bound_sum(rows: &[KernelRow], g: usize) -> (f64, usize) {
    let known = rows.iter().filter_map(|r| r.bound_s[g]).sum();
    let unknown = rows.iter().filter(|r| r.bound_s[g].is_none()).count();
    (known, unknown)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "?".into(), f)
}

fn unit_name(u: Option<Unit>) -> &'static str {
    match u {
        Some(Unit::TensorHalf) => "tensor",
        Some(Unit::F32) => "f32",
        None => "?",
    }
}

/// The analytic table (dry run / emulator): cost and bound per GPU, no times.
pub fn print_analytic(records: &[LaunchRecord], peaks: &[Peaks]) {
    let rows = aggregate(records, peaks);
    let sms = peaks.first().map_or(132, |p| p.sms);
    print!(
        "{:<40} {:>8} {:>10} {:>10} {:>6}",
        "kernel", "launches", "GFLOP", "MB", "unit"
    );
    for p in peaks {
        print!(" {:>14}", format!("bound {} ms", short(&p.name)));
    }
    println!(" {:>7} {:>13}", "share", format!("blocks/{sms}SM"));
    let (first_total, _) = bound_sum(&rows, 0);
    for r in &rows {
        print!(
            "{:<40} {:>8} {:>10} {:>10} {:>6}",
            r.kernel,
            r.launches,
            opt(r.flops, |v| format!("{:.2}", v / 1e9)),
            opt(r.bytes, |v| format!("{:.1}", v / 1e6)),
            unit_name(r.unit)
        );
        for b in &r.bound_s {
            print!(" {:>14}", opt(*b, |v| format!("{:.3}", v * 1e3)));
        }
        println!(
            " {:>7} {:>13.1}",
            opt(r.bound_s[0], |v| format!("{:.1}%", 100.0 * v / first_total)),
            r.max_blocks as f64 / sms as f64
        );
    }
    let flops: f64 = rows.iter().filter_map(|r| r.flops).sum();
    let bytes: f64 = rows.iter().filter_map(|r| r.bytes).sum();
    print!(
        "{:<40} {:>8} {:>10.2} {:>10.1} {:>6}",
        "sum (roofline lower bound of the step)",
        rows.iter().map(|r| r.launches).sum::<usize>(),
        flops / 1e9,
        bytes / 1e6,
        ""
    );
    for g in 0..peaks.len() {
        print!(" {:>14.3}", bound_sum(&rows, g).0 * 1e3);
    }
    println!();
    print_unknown(&rows);
    for (g, p) in peaks.iter().enumerate() {
        println!(
            "profile bound_ms[{}]={:.4}",
            short(&p.name),
            bound_sum(&rows, g).0 * 1e3
        );
    }
}

/// The timed table (driver): GPU time per kernel against its bound on `peaks`.
pub fn print_timed(records: &[LaunchRecord], peaks: &Peaks) {
    let rows = aggregate(records, std::slice::from_ref(peaks));
    let total_ms: f64 = rows.iter().filter_map(|r| r.gpu_ms).sum();
    println!(
        "{:<40} {:>8} {:>9} {:>7} {:>16} {:>10} {:>7} {:>13}",
        "kernel",
        "launches",
        "ms",
        "share",
        "achieved",
        "bound ms",
        "eff.",
        format!("blocks/{}SM", peaks.sms)
    );
    for r in &rows {
        let ms = r.gpu_ms.unwrap_or(0.0);
        let achieved = match (r.flops, r.bytes, r.unit) {
            (Some(f), Some(b), Some(u)) if ms > 0.0 => {
                let c = crate::device::cost::Cost {
                    flops: f,
                    bytes: b,
                    unit: u,
                };
                if peaks.compute_bound(&c) {
                    format!("{:.2} TFLOP/s", f / (ms * 1e-3) / 1e12)
                } else {
                    format!("{:.1} GB/s", b / (ms * 1e-3) / 1e9)
                }
            }
            _ => "?".into(),
        };
        println!(
            "{:<40} {:>8} {:>9.3} {:>6.1}% {:>16} {:>10} {:>7} {:>13.1}",
            r.kernel,
            r.launches,
            ms,
            100.0 * ms / total_ms.max(f64::MIN_POSITIVE),
            achieved,
            opt(r.bound_s[0], |v| format!("{:.3}", v * 1e3)),
            opt(r.bound_s[0], |v| format!(
                "{:.1}%",
                100.0 * v * 1e3 / ms.max(1e-12)
            )),
            r.max_blocks as f64 / peaks.sms as f64
        );
    }
    let (bound, _) = bound_sum(&rows, 0);
    println!(
        "{:<40} {:>8} {:>9.3} {:>7} {:>16} {:>10.3} {:>7}",
        "sum",
        rows.iter().map(|r| r.launches).sum::<usize>(),
        total_ms,
        "100%",
        "",
        bound * 1e3,
        format!("{:.1}%", 100.0 * bound * 1e3 / total_ms.max(1e-12))
    );
    print_unknown(&rows);
    println!(
        "profile gpu_ms={total_ms:.4} bound_ms[{}]={:.4}",
        short(&peaks.name),
        bound * 1e3
    );
}

fn print_unknown(rows: &[KernelRow]) {
    let unknown: Vec<&str> = rows
        .iter()
        .filter(|r| r.flops.is_none())
        .map(|r| r.kernel)
        .collect();
    if !unknown.is_empty() {
        println!(
            "no cost rule (\"?\", left out of the bound; add one line to src/device/cost.rs): {}",
            unknown.join(", ")
        );
    }
}

/// "H100 SXM" -> "H100".
fn short(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}
