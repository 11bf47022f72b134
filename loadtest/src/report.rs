//! The report: `results.json`, `summary.md`, and SVG plots (latency CDFs, CPU and memory over
//! time, the scaling curve over replica counts). The SVG is written directly — a line chart
//! needs no font metrics, which plotting crates need fonts for.

use std::fmt::Write as _;
use std::path::Path;

use crate::{RunResult, Target};

/// One line of a chart.
pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// An SVG line chart.
pub(crate) fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 170.0, 40.0, 50.0);
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, f64::MIN);
    for (x, y) in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y0 = 0.0;
    let y1 = if y1 <= y0 { 1.0 } else { y1 * 1.05 };
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (w - right + left) / 2.0,
        escape(title)
    );
    // Axes and ticks.
    let _ = write!(
        svg,
        r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##,
        h - bottom,
        w - right
    );
    let xs = tick_step(x1 - x0, 6.0);
    let mut t = (x0 / xs).ceil() * xs;
    while t <= x1 + xs * 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(t),
            top,
            h - bottom,
            h - bottom + 16.0,
            fmt_tick(t)
        );
        t += xs;
    }
    let ys = tick_step(y1 - y0, 5.0);
    let mut t = y0;
    while t <= y1 + ys * 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            left,
            w - right,
            py(t),
            left - 6.0,
            py(t) + 4.0,
            fmt_tick(t)
        );
        t += ys;
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (w - right + left) / 2.0,
        h - 12.0,
        escape(x_label)
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (h - bottom + top) / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if path.len() == 1 {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(s.points[0].0),
                py(s.points[0].1)
            );
        }
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
            path.join(" ")
        );
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = write!(
            svg,
            r#"<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" stroke="{color}" stroke-width="3"/><text x="{3}" y="{4}">{5}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            ly,
            w - right + 36.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{v:.2}")
    }
}

fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, (i + 1) as f64 / n))
        .collect()
}

/// Writes the report into `dir`.
pub(crate) fn write(
    dir: &Path,
    command: &str,
    runs: &[RunResult],
    targets: &[Target],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "command": command,
            "runs": runs,
            "targets": targets,
        }))?,
    )?;
    let label = |r: &RunResult| {
        format!(
            "{} repl.{}",
            r.replicas,
            if r.keda_write_pattern {
                " KEDA".to_owned()
            } else if let Some(n) = r.reference_for {
                format!(" (1/{n} of the objects)")
            } else {
                String::new()
            }
        )
    };
    let signal: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: label(r),
            points: cdf_points(&r.signal_latency.cdf),
        })
        .collect();
    std::fs::write(
        dir.join("signal-latency-cdf.svg"),
        line_chart(
            "Signal latency (source change → served by every replica)",
            "seconds",
            "share of changes",
            &signal,
        ),
    )?;
    let lag: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: label(r),
            points: cdf_points(&r.poll_lag.cdf),
        })
        .collect();
    std::fs::write(
        dir.join("poll-lag-cdf.svg"),
        line_chart(
            "Poll-schedule lag (keda_internal_scale_loop_latency_seconds)",
            "seconds",
            "share of samples",
            &lag,
        ),
    )?;
    let mut cpu = Vec::new();
    let mut mem = Vec::new();
    for r in runs {
        for (name, series) in &r.series {
            cpu.push(Series {
                name: format!("{} {name}", label(r)),
                points: series.iter().map(|p| (p.t, p.cpu_cores)).collect(),
            });
            mem.push(Series {
                name: format!("{} {name}", label(r)),
                points: series.iter().map(|p| (p.t, p.rss_mib)).collect(),
            });
        }
    }
    std::fs::write(
        dir.join("cpu.svg"),
        line_chart(
            "CPU per replica over the measured window",
            "seconds",
            "cores",
            &cpu,
        ),
    )?;
    std::fs::write(
        dir.join("memory.svg"),
        line_chart("Resident memory per replica", "seconds", "MiB", &mem),
    )?;
    let normal: Vec<&RunResult> = runs
        .iter()
        .filter(|r| !r.keda_write_pattern && r.reference_for.is_none())
        .collect();
    if normal.len() > 1 {
        let curve = vec![
            Series {
                name: "CPU per replica".into(),
                points: normal
                    .iter()
                    .map(|r| (r.replicas as f64, r.cpu_cores_per_replica))
                    .collect(),
            },
            Series {
                name: "CPU, all replicas".into(),
                points: normal
                    .iter()
                    .map(|r| {
                        (
                            r.replicas as f64,
                            r.cpu_cores_per_replica * r.replicas as f64,
                        )
                    })
                    .collect(),
            },
        ];
        std::fs::write(
            dir.join("scaling.svg"),
            line_chart("Scaling over replica counts", "replicas", "cores", &curve),
        )?;
    }
    std::fs::write(dir.join("summary.md"), summary(command, runs, targets))?;
    Ok(())
}

/// The Markdown summary.
pub(crate) fn summary(command: &str, runs: &[RunResult], targets: &[Target]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# ringscale load test\n\n`{command}`\n");
    let _ = writeln!(
        md,
        "| replicas | mode | objects × triggers | ready (s) | signal p50 / p90 / p99 / max (s) | activation p50 / p99 / max (s) | poll lag p50 / p99 / max (ms) | CPU per replica (cores) | peak RSS max (MiB) | API req/s (writes/s) | replication KiB/s | signal probes timed out |"
    );
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} × {} | {} | {:.2} / {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} ({} of {}) | {:.1} / {:.1} / {:.1} | {:.3} | {:.1} | {:.1} ({:.2}) | {:.1} | {} |",
            r.replicas,
            if r.keda_write_pattern {
                "KEDA write pattern".to_owned()
            } else if let Some(n) = r.reference_for {
                format!("ringscale, 1/{n} of the objects alone")
            } else {
                "ringscale".to_owned()
            },
            r.objects,
            r.triggers,
            if r.values_at_start >= (r.objects * r.triggers) as u64 {
                format!("{:.0}", r.ready_seconds)
            } else {
                format!(
                    "not after {:.0} ({} of {} values)",
                    r.ready_seconds,
                    r.values_at_start,
                    r.objects * r.triggers
                )
            },
            r.signal_latency.p50,
            r.signal_latency.p90,
            r.signal_latency.p99,
            r.signal_latency.max,
            r.activation_latency.p50,
            r.activation_latency.p99,
            r.activation_latency.max,
            r.activation_latency.n,
            r.activations,
            r.poll_lag.p50 * 1000.0,
            r.poll_lag.p99 * 1000.0,
            r.poll_lag.max * 1000.0,
            r.cpu_cores_per_replica,
            r.peak_rss_mib.iter().copied().fold(0.0, f64::max),
            r.api_requests_per_second.values().sum::<f64>(),
            r.api_writes_per_second,
            r.replication_bytes_per_second / 1024.0,
            r.probe_timeouts,
        );
    }
    for r in runs
        .iter()
        .filter(|r| r.slow_objects + r.failing_objects > 0)
    {
        let _ = writeln!(
            md,
            "\nNoisy neighbours ({} replicas): {} objects on a slow source, {} on a failing one; the poll lag above is the other objects'; theirs: p50 {:.1} / p99 {:.1} / max {:.1} ms ({} samples).",
            r.replicas,
            r.slow_objects,
            r.failing_objects,
            r.noisy_poll_lag.p50 * 1000.0,
            r.noisy_poll_lag.p99 * 1000.0,
            r.noisy_poll_lag.max * 1000.0,
            r.noisy_poll_lag.n
        );
    }
    let _ = writeln!(md, "\nAPI requests per second by verb:\n");
    for r in runs {
        let verbs: Vec<String> = r
            .api_requests_per_second
            .iter()
            .map(|(v, n)| format!("{v} {n:.2}"))
            .collect();
        let _ = writeln!(
            md,
            "- {} replicas{}: {}",
            r.replicas,
            if r.keda_write_pattern { " (KEDA)" } else { "" },
            verbs.join(", ")
        );
    }
    for r in runs {
        if let Some(h) = &r.hpa_query_latency {
            let _ = writeln!(
                md,
                "\nHPA queries ({} replicas): {} asked ({} failed), metrics API latency p50 {:.1} ms / p90 {:.1} ms / p99 {:.1} ms / max {:.1} ms{}.",
                r.replicas,
                r.hpa_queries,
                r.hpa_query_errors,
                h.p50 * 1000.0,
                h.p90 * 1000.0,
                h.p99 * 1000.0,
                h.max * 1000.0,
                r.source_commands_per_second
                    .map(|c| format!("; the source ran {c:.0} commands/s"))
                    .unwrap_or_default()
            );
        }
        if let (Some(secs), Some(w)) = (r.outage_seconds, r.outage_writes_per_second) {
            let _ = writeln!(
                md,
                "\nSource outage ({} replicas): {secs:.0} s down, {w:.2} API writes/s meanwhile ({}).",
                r.replicas,
                r.outage_writes_by_kind
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some((served, asked)) = r.fallback_served {
                let _ = writeln!(
                    md,
                    "During it, {served} of {asked} objects asked through a random replica were served their fallback value."
                );
            }
        }
    }
    if !targets.is_empty() {
        let _ = writeln!(
            md,
            "\n## Targets\n\n| target | figure | result |\n| --- | --- | --- |"
        );
        for t in targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                t.target,
                t.figure,
                if t.met { "met" } else { "MISSED" }
            );
        }
    }
    let _ = writeln!(
        md,
        "\nPlots: [signal latency CDF](signal-latency-cdf.svg), [poll lag CDF](poll-lag-cdf.svg), [CPU](cpu.svg), [memory](memory.svg){}.",
        if runs.iter().filter(|r| !r.keda_write_pattern).count() > 1 {
            ", [scaling curve](scaling.svg)"
        } else {
            ""
        }
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_svg_with_one_line_per_series() {
        let svg = line_chart(
            "t <1>",
            "x",
            "y",
            &[
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 0.0), (1.0, 2.0)],
                },
                Series {
                    name: "b".into(),
                    points: vec![(0.5, 1.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        // An empty chart still renders.
        assert!(line_chart("e", "x", "y", &[]).contains("</svg>"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(10.0, 5.0), 2.0);
        assert_eq!(tick_step(0.9, 6.0), 0.2);
        assert_eq!(tick_step(0.0, 5.0), 1.0);
    }
}
