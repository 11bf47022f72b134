//! Prometheus metrics of the operator, with KEDA's names and labels for the same concepts, so
//! dashboards and alerts written for KEDA keep working. Series of an object go when this replica
//! stops owning it, so the label values stay bounded by the objects owned.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ringscale_ring::{Kind, ObjectId};

type FloatGauge = Gauge<f64, AtomicU64>;
/// Kind, namespace and name of an object.
type ObjectKey = (Kind, Arc<str>, Arc<str>);

/// Labels of the per-trigger metrics (`keda_scaler_*`). The four families and the list of an
/// object's series hold clones of one label set, so the values are shared strings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the label names are KEDA's
pub struct ScalerLabels {
    /// Namespace of the object.
    pub namespace: Arc<str>,
    /// External metric name (`s0-redis-jobs`).
    pub metric: Arc<str>,
    /// Name of the ScaledObject or ScaledJob (KEDA uses this label for both).
    pub scaledObject: Arc<str>,
    /// Trigger type, e.g. `redis`.
    pub scaler: Arc<str>,
    /// Index of the trigger.
    pub triggerIndex: Arc<str>,
    /// `scaledobject` or `scaledjob`.
    pub r#type: &'static str,
}

/// Labels of `keda_internal_scale_loop_latency_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the label names are KEDA's
struct LoopLabels {
    namespace: String,
    r#type: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the label names are KEDA's
struct ScaledObjectLabels {
    namespace: String,
    scaledObject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the label names are KEDA's
struct ScaledJobLabels {
    namespace: String,
    scaledJob: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the label names are KEDA's
struct KindLabels {
    kind: String,
}

/// The operator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    scale_loop_latency: Family<LoopLabels, FloatGauge>,
    value: Family<ScalerLabels, FloatGauge>,
    latency: Family<ScalerLabels, FloatGauge>,
    active: Family<ScalerLabels, FloatGauge>,
    errors: Family<ScalerLabels, Counter>,
    scaled_object_errors: Family<ScaledObjectLabels, Counter>,
    scaled_job_errors: Family<ScaledJobLabels, Counter>,
    paused: Family<ScaledObjectLabels, Gauge>,
    owned: Family<KindLabels, Gauge>,
    /// Label sets exported per object, to remove them when the object goes.
    series: Mutex<HashMap<ObjectKey, Vec<ScalerLabels>>>,
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::ScaledObject => "scaledobject",
        Kind::ScaledJob => "scaledjob",
    }
}

impl Metrics {
    /// Registers every metric in `registry` (the families are shared, so values recorded later
    /// show up there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "keda_internal_scale_loop_latency_seconds",
            "Delay between the planned and the actual start of a poll of an object",
            self.scale_loop_latency.clone(),
        );
        registry.register(
            "keda_scaler_metrics_value",
            "The current value of each trigger's metric",
            self.value.clone(),
        );
        registry.register(
            "keda_scaler_metrics_latency_seconds",
            "Time taken to read each trigger's metric from its source",
            self.latency.clone(),
        );
        registry.register(
            "keda_scaler_active",
            "1 when the trigger is active, 0 when not",
            self.active.clone(),
        );
        registry.register(
            "keda_scaler_detail_errors",
            "Errors met reading each trigger's metric",
            self.errors.clone(),
        );
        registry.register(
            "keda_scaled_object_errors",
            "Errors met by the triggers of each ScaledObject",
            self.scaled_object_errors.clone(),
        );
        registry.register(
            "keda_scaled_job_errors",
            "Errors met by the triggers of each ScaledJob",
            self.scaled_job_errors.clone(),
        );
        registry.register(
            "keda_scaled_object_paused",
            "1 when the ScaledObject is paused, 0 when not",
            self.paused.clone(),
        );
        registry.register(
            "ringscale_owned_objects",
            "Objects this replica owns and polls, by kind",
            self.owned.clone(),
        );
    }

    /// How late a planned poll started.
    pub(crate) fn loop_latency(&self, id: &ObjectId, lag: Duration) {
        self.scale_loop_latency
            .get_or_create(&LoopLabels {
                namespace: id.namespace.clone(),
                r#type: kind_label(id.kind).to_owned(),
                resource: id.name.clone(),
            })
            .set(lag.as_secs_f64());
    }

    /// The labels of one trigger metric of an object.
    pub(crate) fn scaler_labels(
        id: &ObjectId,
        metric: &str,
        scaler: &str,
        index: usize,
    ) -> ScalerLabels {
        ScalerLabels {
            namespace: id.namespace.as_str().into(),
            metric: metric.into(),
            scaledObject: id.name.as_str().into(),
            scaler: scaler.into(),
            triggerIndex: index.to_string().into(),
            r#type: kind_label(id.kind),
        }
    }

    fn remember(&self, labels: &ScalerLabels, kind: Kind) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let list = series
            .entry((kind, labels.namespace.clone(), labels.scaledObject.clone()))
            .or_default();
        if !list.contains(labels) {
            list.push(labels.clone());
        }
    }

    /// A successful read.
    pub(crate) fn polled(
        &self,
        kind: Kind,
        labels: &ScalerLabels,
        value: f64,
        active: bool,
        took: Duration,
    ) {
        self.remember(labels, kind);
        self.value.get_or_create(labels).set(value);
        self.latency.get_or_create(labels).set(took.as_secs_f64());
        self.active
            .get_or_create(labels)
            .set(if active { 1.0 } else { 0.0 });
    }

    /// A failed read.
    pub(crate) fn failed(&self, kind: Kind, labels: &ScalerLabels, took: Duration) {
        self.remember(labels, kind);
        self.errors.get_or_create(labels).inc();
        self.latency.get_or_create(labels).set(took.as_secs_f64());
        self.active.get_or_create(labels).set(0.0);
        match kind {
            Kind::ScaledObject => {
                self.scaled_object_errors
                    .get_or_create(&ScaledObjectLabels {
                        namespace: labels.namespace.to_string(),
                        scaledObject: labels.scaledObject.to_string(),
                    })
                    .inc();
            }
            Kind::ScaledJob => {
                self.scaled_job_errors
                    .get_or_create(&ScaledJobLabels {
                        namespace: labels.namespace.to_string(),
                        scaledJob: labels.scaledObject.to_string(),
                    })
                    .inc();
            }
        }
    }

    /// Whether a ScaledObject is paused.
    pub(crate) fn paused(&self, namespace: &str, name: &str, paused: bool) {
        self.paused
            .get_or_create(&ScaledObjectLabels {
                namespace: namespace.to_owned(),
                scaledObject: name.to_owned(),
            })
            .set(i64::from(paused));
    }

    /// One more (or one fewer) owned object of a kind.
    pub(crate) fn owning(&self, kind: Kind, more: bool) {
        let gauge = self.owned.get_or_create(&KindLabels {
            kind: kind_label(kind).to_owned(),
        });
        if more {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    /// Removes every series of an object (no longer owned, or deleted).
    pub(crate) fn forget(&self, id: &ObjectId) {
        let (kind, namespace, name) = (id.kind, id.namespace.as_str(), id.name.as_str());
        let labels = self
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(kind, Arc::from(namespace), Arc::from(name)))
            .unwrap_or_default();
        for l in &labels {
            self.value.remove(l);
            self.latency.remove(l);
            self.active.remove(l);
            self.errors.remove(l);
        }
        self.scale_loop_latency.remove(&LoopLabels {
            namespace: namespace.to_owned(),
            r#type: kind_label(kind).to_owned(),
            resource: name.to_owned(),
        });
        match kind {
            Kind::ScaledObject => {
                let l = ScaledObjectLabels {
                    namespace: namespace.to_owned(),
                    scaledObject: name.to_owned(),
                };
                self.scaled_object_errors.remove(&l);
                self.paused.remove(&l);
            }
            Kind::ScaledJob => {
                self.scaled_job_errors.remove(&ScaledJobLabels {
                    namespace: namespace.to_owned(),
                    scaledJob: name.to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(m: &Metrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }

    #[test]
    fn series_carry_kedas_names_and_labels_and_go_with_the_object() {
        let m = Metrics::default();
        let orders = ObjectId::scaled_object("ns", "orders");
        let l = Metrics::scaler_labels(&orders, "s0-redis-q", "redis", 0);
        m.polled(Kind::ScaledObject, &l, 12.0, true, Duration::from_millis(3));
        m.failed(Kind::ScaledObject, &l, Duration::from_millis(5));
        m.loop_latency(&orders, Duration::from_millis(7));
        m.paused("ns", "orders", false);
        m.owning(Kind::ScaledObject, true);
        let out = text(&m);
        let labels = r#"namespace="ns",metric="s0-redis-q",scaledObject="orders",scaler="redis",triggerIndex="0",type="scaledobject""#;
        for line in [
            format!("keda_scaler_metrics_value{{{labels}}} 12.0"),
            format!("keda_scaler_metrics_latency_seconds{{{labels}}} 0.005"),
            format!("keda_scaler_active{{{labels}}} 0.0"),
            format!("keda_scaler_detail_errors_total{{{labels}}} 1"),
            r#"keda_scaled_object_errors_total{namespace="ns",scaledObject="orders"} 1"#.to_owned(),
            r#"keda_internal_scale_loop_latency_seconds{namespace="ns",type="scaledobject",resource="orders"} 0.007"#.to_owned(),
            r#"keda_scaled_object_paused{namespace="ns",scaledObject="orders"} 0"#.to_owned(),
            r#"ringscale_owned_objects{kind="scaledobject"} 1"#.to_owned(),
        ] {
            assert!(out.contains(&line), "missing {line} in\n{out}");
        }
        m.forget(&orders);
        let out = text(&m);
        assert!(!out.contains("orders"), "series left behind:\n{out}");
    }
}

impl crate::controller::Stats {
    /// Registers the controller's counters in `registry` as `ringscale_operator_*` (read from
    /// the atomics when scraped).
    pub fn register(self: &std::sync::Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(StatsCollector(std::sync::Arc::clone(self))));
    }
}

/// Exports [`crate::controller::Stats`].
#[derive(Debug)]
struct StatsCollector(std::sync::Arc<crate::controller::Stats>);

impl prometheus_client::collector::Collector for StatsCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use std::sync::atomic::{AtomicU64, Ordering};
        let s = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "ringscale_operator_cycles",
                "Poll cycles run",
                load(&s.cycles),
            ),
            (
                "ringscale_operator_cycles_skipped",
                "Planned polls skipped because the object's previous cycle was still running",
                load(&s.skipped),
            ),
            (
                "ringscale_operator_writes_fenced",
                "Writes refused because the object changed (409) or a newer owner stamped it",
                load(&s.fenced),
            ),
            (
                "ringscale_operator_events_dropped",
                "Events dropped: the publishing queue was full or the report budget spent",
                load(&s.events_dropped),
            ),
            (
                "ringscale_operator_reports_deferred",
                "Status writes that only reported, put off for lack of budget",
                load(&s.reports_deferred),
            ),
        ] {
            let c = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "ringscale_operator_writes",
            "Kubernetes API writes of the controller, by what was written",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (kind, value) in [
            ("status", load(&s.status_writes)),
            ("scale", load(&s.scale_writes)),
            ("hpa", load(&s.hpa_writes)),
            ("meta", load(&s.meta_writes)),
            ("stamp", load(&s.stamps)),
            ("event", load(&s.events)),
            ("job_create", load(&s.jobs_created)),
            ("job_delete", load(&s.jobs_deleted)),
        ] {
            let labels = [("kind", kind)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn the_controllers_counters_are_exported() {
        let stats = std::sync::Arc::new(crate::controller::Stats::default());
        stats
            .scale_writes
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        stats
            .cycles
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ringscale_operator_cycles_total 7"), "{text}");
        assert!(
            text.contains("ringscale_operator_writes_total{kind=\"scale\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ringscale_operator_writes_fenced_total 0"),
            "{text}"
        );
    }
}
