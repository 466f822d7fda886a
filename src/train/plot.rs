//! The loss curve of a run as an SVG: loss per optimizer step, stage boundaries as dashed lines.

use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// `points` = (step, loss); `boundaries` = (first step of a stage, stage name).
pub fn write_loss_svg(
    path: &Path,
    points: &[(usize, f64)],
    boundaries: &[(usize, String)],
    title: &str,
) -> Result<()> {
    let (w, h, pad) = (900.0, 420.0, 60.0);
    let finite: Vec<(usize, f64)> = points
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    )?;
    if !finite.is_empty() {
        let x_max = finite.iter().map(|p| p.0).max().unwrap().max(1) as f64;
        let x_min = finite.iter().map(|p| p.0).min().unwrap() as f64;
        let y_max = finite.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let y_min = finite.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        let y_span = (y_max - y_min).max(1e-9);
        let x_span = (x_max - x_min).max(1.0);
        let sx = |x: f64| pad + (x - x_min) / x_span * (w - 2.0 * pad);
        let sy = |y: f64| h - pad - (y - y_min) / y_span * (h - 2.0 * pad);
        writeln!(
            svg,
            r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            h - pad,
            w - pad,
            h - pad
        )?;
        writeln!(
            svg,
            r#"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"#,
            h - pad
        )?;
        for i in 0..=4 {
            let y = y_min + y_span * i as f64 / 4.0;
            writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{y:.3}</text>"#,
                pad - 6.0,
                sy(y) + 4.0
            )?;
            let x = x_min + x_span * i as f64 / 4.0;
            writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{x:.0}</text>"#,
                sx(x),
                h - pad + 18.0
            )?;
        }
        writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">optimizer step</text>"#,
            w / 2.0,
            h - 12.0
        )?;
        writeln!(
            svg,
            r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">loss</text>"#,
            h / 2.0,
            h / 2.0
        )?;
        for (step, name) in boundaries {
            let x = sx(*step as f64);
            writeln!(
                svg,
                r##"<line x1="{x}" y1="{pad}" x2="{x}" y2="{}" stroke="#888" stroke-dasharray="4 4"/>"##,
                h - pad
            )?;
            writeln!(
                svg,
                r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
                x + 4.0,
                pad + 12.0,
                xml_escape(name)
            )?;
        }
        let pts: Vec<String> = finite
            .iter()
            .map(|&(s, l)| format!("{:.1},{:.1}", sx(s as f64), sy(l)))
            .collect();
        writeln!(
            svg,
            r##"<polyline fill="none" stroke="#1f5fa8" stroke-width="1.5" points="{}"/>"##,
            pts.join(" ")
        )?;
    }
    writeln!(svg, "</svg>")?;
    crate::io::safetensors::write_atomically(path, svg.as_bytes())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
