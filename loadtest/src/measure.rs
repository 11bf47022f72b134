//! Measurements: distributions, process CPU and memory from `/proc`, Prometheus text samples.

use serde::Serialize;

/// A distribution of samples (seconds or any unit), summarised.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Sorted samples, thinned to at most 500 for the CDF plot.
    pub cdf: Vec<f64>,
}

impl Dist {
    pub(crate) fn of(mut samples: Vec<f64>) -> Dist {
        samples.retain(|v| v.is_finite());
        if samples.is_empty() {
            return Dist::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[i]
        };
        let step = n.div_ceil(500).max(1);
        let mut cdf: Vec<f64> = samples.iter().step_by(step).copied().collect();
        if cdf.last() != samples.last() {
            cdf.push(samples[n - 1]);
        }
        Dist {
            n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[n - 1],
            mean: samples.iter().sum::<f64>() / n as f64,
            cdf,
        }
    }
}

/// CPU time (user + system) of a process, in seconds, and its resident and peak resident
/// memory in MiB.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless configured otherwise).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` once the process is gone.
pub(crate) fn proc_sample(pid: u32, ticks: f64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(ProcSample {
        cpu_seconds: (utime + stime) / ticks,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    })
}

/// Values of the samples of `metric` in Prometheus text (any labels).
pub(crate) fn samples(text: &str, metric: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// The samples of `metric` in Prometheus text with their label text (`a="1",b="2"`; empty
/// without labels).
pub(crate) fn labelled_samples<'a>(text: &'a str, metric: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.rfind('}')?;
                (&inner[..end], inner[end + 1..].trim())
            } else if rest.starts_with(' ') {
                ("", rest.trim())
            } else {
                return None;
            };
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of label `name` in a label text (values without escaped quotes).
pub(crate) fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!((d.p50, d.p90, d.p99, d.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(d.n, 100);
        assert!((d.mean - 50.5).abs() < 1e-9);
        assert_eq!(Dist::of(vec![]).n, 0);
        assert_eq!(Dist::of(vec![3.0]).p99, 3.0);
    }

    #[test]
    fn prometheus_samples_match_the_metric_name_exactly() {
        let text = "# HELP x\nfoo_total{a=\"1\"} 3\nfoo_total 4\nfoo_total_other 9\nbar 1\n";
        assert_eq!(samples(text, "foo_total"), vec![3.0, 4.0]);
    }

    #[test]
    fn labelled_samples_keep_their_labels() {
        let text = "# HELP x\nlat{namespace=\"default\",resource=\"lt-7\"} 0.25\nlat 1\nlat_other{a=\"b\"} 9\n";
        let got = labelled_samples(text, "lat");
        assert_eq!(
            got,
            vec![("namespace=\"default\",resource=\"lt-7\"", 0.25), ("", 1.0)]
        );
        assert_eq!(label(got[0].0, "resource"), Some("lt-7"));
        assert_eq!(label(got[0].0, "type"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let s = proc_sample(std::process::id(), clock_ticks());
        assert!(s.is_some_and(|s| s.rss_mib > 0.0 && s.peak_rss_mib >= s.rss_mib));
    }
}
