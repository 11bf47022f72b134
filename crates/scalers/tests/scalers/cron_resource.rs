//! `cron` (the clock is its source), `cpu` and `memory` (HPA Resource metrics), and what every
//! trigger shares: unknown and unsupported types, metric types, pod identities.

use ringscale_api::MetricType;
use ringscale_scalers::{ErrorKind, MetricSpec, Resource, ResourceMetric, ResourceTarget, Sources};

use crate::common::*;

#[tokio::test]
async fn cron_windows_set_desired_replicas() {
    let sources = Sources::default();
    // Inside: the next end (within a minute) comes before the next start (next January 1st).
    let inside = build(
        &input(
            "cron",
            &[
                ("timezone", "Europe/Berlin"),
                ("start", "0 0 1 1 *"),
                ("end", "* * * * *"),
                ("desiredReplicas", "10"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&inside).await, (10.0, true));
    // Outside: the next start comes first. KEDA reports 0 outside the window.
    let outside = build(
        &input(
            "cron",
            &[
                ("timezone", "UTC"),
                ("start", "* * * * *"),
                ("end", "0 0 29 2 *"),
                ("desiredReplicas", "10"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&outside).await, (0.0, false));
    let named = build(
        &input(
            "cron",
            &[
                ("timezone", "Asia/Kolkata"),
                ("start", "0 6 * * 1-5"),
                ("end", "0,30 20 * * *"),
                ("desiredReplicas", "3"),
            ],
        ),
        &sources,
    );
    let specs = named.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(m.name, "s0-cron-Asia-Kolkata-06xx1-5-0Cm3020xxx");
    assert_eq!(m.target_quantity(), "1");
}

#[tokio::test]
async fn cron_parameters() {
    let errors = problems(&input("cron", &[("desiredReplicas", "ten")]));
    for key in ["timezone", "start", "end"] {
        assert_problem(&errors, key, "missing required parameter");
    }
    assert_problem(&errors, "desiredReplicas", "is not an integer");
    let errors = problems(&input(
        "cron",
        &[
            ("timezone", "Mars/Olympus_Mons"),
            ("start", "0 6 * *"),
            ("end", "61 * * * *"),
            ("desiredReplicas", "0"),
        ],
    ));
    assert_problem(&errors, "timezone", "unknown time zone");
    assert_problem(&errors, "start", "expected exactly 5 fields");
    assert_problem(&errors, "end", "above maximum");
    assert_problem(&errors, "desiredReplicas", "must not be 0");
    let errors = problems(&input(
        "cron",
        &[
            ("timezone", "UTC"),
            ("start", "0 6 * * *"),
            ("end", "0 6 * * *"),
            ("desiredReplicas", "2"),
        ],
    ));
    assert_problem(&errors, "end", "exactly same time");
    let errors = problems(&input(
        "cron",
        &[
            ("timezone", "UTC"),
            ("start", "0 0 30 2 *"),
            ("end", "@daily"),
            ("desiredReplicas", "2"),
        ],
    ));
    assert_problem(&errors, "start", "never fires");
    assert_problem(&errors, "end", "descriptors");
}

#[tokio::test]
async fn cpu_and_memory_become_resource_metrics() {
    let sources = Sources::default();
    let cpu = build(
        &input("cpu", &[("value", "60")]).with_metric_type(MetricType::Utilization),
        &sources,
    );
    assert!(cpu.is_resource());
    assert_eq!(
        cpu.metric_specs().await.unwrap(),
        [MetricSpec::Resource(ResourceMetric {
            resource: Resource::Cpu,
            container: None,
            target: ResourceTarget::Utilization(60)
        })]
    );
    let p = cpu.poll("cpu").await.unwrap();
    assert!(
        p.values.is_empty(),
        "the metrics server serves resource metrics, not ringscale"
    );
    let memory = build(
        &input(
            "memory",
            &[
                ("value", "512Mi"),
                ("containerName", "app"),
                ("activationValue", "100Mi"),
            ],
        )
        .with_metric_type(MetricType::AverageValue),
        &sources,
    );
    assert_eq!(
        memory.metric_specs().await.unwrap(),
        [MetricSpec::Resource(ResourceMetric {
            resource: Resource::Memory,
            container: Some("app".into()),
            target: ResourceTarget::AverageValue("512Mi".into())
        })]
    );
    assert_eq!(
        memory.resource_activation(),
        Some(&ResourceTarget::AverageValue("100Mi".into()))
    );
    // The deprecated `type` metadata still works.
    let legacy = build(
        &input("cpu", &[("type", "Utilization"), ("value", "50")]),
        &sources,
    );
    assert!(
        matches!(&legacy.metric_specs().await.unwrap()[0], MetricSpec::Resource(r) if r.target == ResourceTarget::Utilization(50))
    );

    let errors = problems(&input("cpu", &[]).with_metric_type(MetricType::Utilization));
    assert_problem(&errors, "value", "missing required parameter");
    let errors =
        problems(&input("cpu", &[("value", "sixty")]).with_metric_type(MetricType::Utilization));
    assert_problem(&errors, "value", "not a whole percentage");
    let errors =
        problems(&input("memory", &[("value", "lots")]).with_metric_type(MetricType::AverageValue));
    assert_problem(&errors, "value", "not a quantity");
    let errors = problems(&input("cpu", &[("value", "60")]));
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("metricType is required")),
        "{errors:#?}"
    );
    let errors = problems(&input("cpu", &[("value", "60")]).with_metric_type(MetricType::Value));
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("allowed values are 'Utilization' or 'AverageValue'")),
        "{errors:#?}"
    );
}

#[test]
fn trigger_types_metric_types_and_identities() {
    let e = problems(&input("gcp-pubsub", &[("subscriptionName", "s")]));
    assert_eq!(e[0].kind, ErrorKind::Unsupported);
    assert!(
        e[0].to_string()
            .contains("\"gcp-pubsub\" is not supported by ringscale yet"),
        "{}",
        e[0]
    );
    let e = problems(&input("redis-list", &[]));
    assert_eq!(e[0].kind, ErrorKind::Config);
    assert!(e[0].to_string().contains("unknown trigger type"));
    let e = problems(
        &input("redis", &[("address", "r:6379"), ("listName", "q")])
            .with_metric_type(MetricType::Utilization),
    );
    assert!(
        e[0].to_string()
            .contains("'Utilization' metric type is unsupported for external metrics"),
        "{}",
        e[0]
    );
    let mut with_identity = input("redis", &[("address", "r:6379"), ("listName", "q")]);
    with_identity.pod_identity = Some("azure-workload".into());
    let e = problems(&with_identity);
    assert_eq!(e[0].kind, ErrorKind::Unsupported);
    assert!(
        e[0].to_string()
            .contains("podIdentity provider \"azure-workload\" is not supported")
    );
    let mut none = input("redis", &[("address", "r:6379"), ("listName", "q")]);
    none.pod_identity = Some("none".into());
    assert!(ringscale_scalers::parse(&none).is_ok());
}
