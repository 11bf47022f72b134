//! Conversions between cache records and their protobuf form, with validation of what peers send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringscale_cache::{Kind, ObjectId, Record, RecordKey, Version};
use ringscale_proto::replication as pb;

/// Longest namespace, object or metric name accepted from a peer (Kubernetes names are shorter).
pub const MAX_NAME_LEN: usize = 253;

/// Oldest age accepted from a peer; nothing keeps records that long (they are pruned at twice
/// their staleness limit), so an older one is a broken or hostile sender.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The protobuf form of a record, its age measured at `now`.
pub fn to_wire(key: &RecordKey, record: &Record, now: Instant) -> pb::Record {
    pb::Record {
        namespace: key.object.namespace.clone(),
        name: key.object.name.clone(),
        kind: kind_to_wire(key.object.kind),
        metric_name: key.metric_name.clone(),
        value: record.value,
        active: record.active,
        error: record.error.as_deref().unwrap_or_default().to_owned(),
        generation: record.version.generation,
        seq: record.version.seq,
        age_ms: millis(record.age(now)),
        polling_interval_ms: millis(record.polling_interval),
        origin: record.origin.to_string(),
        failures: record.failures,
    }
}

/// An object's kind as the wire spells it.
pub fn kind_to_wire(kind: Kind) -> i32 {
    match kind {
        Kind::ScaledObject => pb::ObjectKind::ScaledObject,
        Kind::ScaledJob => pb::ObjectKind::ScaledJob,
    }
    .into()
}

/// An object's kind from the wire (unset reads as a ScaledObject, as older replicas meant it).
pub fn kind_from_wire(kind: i32) -> Result<Kind, InvalidRecord> {
    match pb::ObjectKind::try_from(kind) {
        Ok(pb::ObjectKind::ScaledObject) => Ok(Kind::ScaledObject),
        Ok(pb::ObjectKind::ScaledJob) => Ok(Kind::ScaledJob),
        Err(_) => Err(InvalidRecord::Kind(kind)),
    }
}

/// The object a request or record names, checked.
pub fn object_from_wire(
    namespace: String,
    name: String,
    kind: i32,
) -> Result<ObjectId, InvalidRecord> {
    self::name("namespace", &namespace)?;
    self::name("name", &name)?;
    Ok(ObjectId::new(kind_from_wire(kind)?, namespace, name))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a record from a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRecord {
    /// An empty or over-long name.
    #[error("{field} is empty or longer than {MAX_NAME_LEN} bytes")]
    Name {
        /// Which field.
        field: &'static str,
    },
    /// An object kind this replica does not know.
    #[error("object kind {0} is unknown")]
    Kind(i32),
    /// NaN or infinite.
    #[error("value {0} is not a finite number")]
    Value(String),
    /// Older than [`MAX_AGE`] or than the local monotonic clock reaches.
    #[error("age of {0} ms is beyond what any replica keeps")]
    Age(u64),
}

fn name(field: &'static str, value: &str) -> Result<(), InvalidRecord> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(InvalidRecord::Name { field });
    }
    Ok(())
}

/// A record received at `now`, checked.
pub fn from_wire(r: pb::Record, now: Instant) -> Result<(RecordKey, Record), InvalidRecord> {
    let object = object_from_wire(r.namespace, r.name, r.kind)?;
    name("metric_name", &r.metric_name)?;
    name("origin", &r.origin)?;
    if !r.value.is_finite() {
        return Err(InvalidRecord::Value(r.value.to_string()));
    }
    let age = Duration::from_millis(r.age_ms);
    let polled_at = (age <= MAX_AGE)
        .then(|| Record::polled_at_from_age(now, age))
        .flatten()
        .ok_or(InvalidRecord::Age(r.age_ms))?;
    let error = (!r.error.is_empty()).then_some(r.error.as_str());
    let record = Record::new(
        r.value,
        r.active,
        error,
        Version {
            generation: r.generation,
            seq: r.seq,
        },
        polled_at,
        Duration::from_millis(r.polling_interval_ms),
        Arc::from(r.origin),
    )
    .with_failures(r.failures);
    Ok((
        RecordKey {
            object,
            metric_name: r.metric_name,
        },
        record,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_wire_with_its_age() {
        let now = Instant::now() + Duration::from_secs(3600);
        let key = RecordKey::scaled_object("default", "orders", "s0-redis-orders");
        let record = Record::new(
            12.5,
            true,
            Some("slow"),
            Version {
                generation: 4,
                seq: 99,
            },
            now - Duration::from_millis(1500),
            Duration::from_secs(30),
            Arc::from("ringscale-1"),
        )
        .with_failures(4);
        let wire = to_wire(&key, &record, now);
        assert_eq!(wire.age_ms, 1500);
        // Received 200 ms later on another clock: still 1.5 s old at the moment it was sent.
        let later = now + Duration::from_millis(200);
        let (k, r) = from_wire(wire, later).unwrap();
        assert_eq!(k, key);
        assert_eq!(r.version, record.version);
        assert_eq!(r.age(later), Duration::from_millis(1500));
        assert_eq!(r.error.as_deref(), Some("slow"));
        assert_eq!(&*r.origin, "ringscale-1");
        // The owner's failure count travels: peers apply fallback from it.
        assert_eq!(r.failures, 4);
    }

    #[test]
    fn malformed_records_are_refused() {
        let now = Instant::now();
        let good = pb::Record {
            namespace: "ns".into(),
            name: "so".into(),
            metric_name: "m".into(),
            origin: "r0".into(),
            value: 1.0,
            ..Default::default()
        };
        assert!(from_wire(good.clone(), now).is_ok());
        let mut bad = good.clone();
        bad.value = f64::NAN;
        assert!(matches!(from_wire(bad, now), Err(InvalidRecord::Value(_))));
        let mut bad = good.clone();
        bad.namespace = "x".repeat(300);
        assert_eq!(
            from_wire(bad, now).err(),
            Some(InvalidRecord::Name { field: "namespace" })
        );
        let mut bad = good.clone();
        bad.kind = 7;
        assert_eq!(from_wire(bad, now).err(), Some(InvalidRecord::Kind(7)));
        let mut bad = good.clone();
        bad.age_ms = u64::MAX;
        assert!(matches!(from_wire(bad, now), Err(InvalidRecord::Age(_))));
        // A ScaledJob's record keeps its kind; an unset kind is a ScaledObject's (older peers).
        let mut job = good.clone();
        job.kind = kind_to_wire(Kind::ScaledJob);
        let (k, _) = from_wire(job, now).unwrap();
        assert_eq!(k.object, ObjectId::scaled_job("ns", "so"));
        let (k, _) = from_wire(good, now).unwrap();
        assert_eq!(k.object, ObjectId::scaled_object("ns", "so"));
    }
}
