//! The Kubernetes objects the ring lives in: member Leases, the coordinator Lease, and the ring
//! ConfigMap, and the compare-and-swap writes on them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use ringscale_ring::{Member, RingState};

/// Label with the ring's name on every object of a ring.
pub const RING_LABEL: &str = "ringscale.io/ring";
/// Label telling member Leases (`member`) from the coordinator Lease (`coordinator`).
pub const ROLE_LABEL: &str = "ringscale.io/role";
/// Label with the member name on a member Lease.
pub const MEMBER_LABEL: &str = "ringscale.io/member";
/// Annotation with a member's replication address (`host:port`).
pub const ADDRESS_ANNOTATION: &str = "ringscale.io/address";
/// Annotation the coordinator sets when it takes over a dead member's Lease.
pub const TAKEN_OVER_ANNOTATION: &str = "ringscale.io/taken-over-by";
/// Annotation a member sets on its Lease when it stops gracefully: it means to come back under
/// the same name (a StatefulSet pod), so the ring keeps its objects for the leave grace (the
/// value, in seconds) instead of moving them away and back.
pub const LEAVING_ANNOTATION: &str = "ringscale.io/leaving";

/// Name of a member's Lease.
pub fn member_lease_name(ring: &str, member: &str) -> String {
    format!("{ring}-member-{member}")
}

/// Name of the coordinator Lease.
pub fn coordinator_lease_name(ring: &str) -> String {
    format!("{ring}-coordinator")
}

/// Name of the ring ConfigMap.
pub fn ring_configmap_name(ring: &str) -> String {
    format!("{ring}-ring")
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn seconds(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// A fresh Lease held by `holder`.
pub fn new_lease(
    name: &str,
    ring: &str,
    role: &str,
    holder: &str,
    duration: std::time::Duration,
    address: Option<&str>,
) -> Lease {
    let mut labels = BTreeMap::from([
        (RING_LABEL.to_owned(), ring.to_owned()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
    ]);
    if role == "member" {
        labels.insert(MEMBER_LABEL.to_owned(), holder.to_owned());
    }
    let annotations =
        address.map(|a| BTreeMap::from([(ADDRESS_ANNOTATION.to_owned(), a.to_owned())]));
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(seconds(duration)),
            acquire_time: Some(micro_now()),
            renew_time: Some(micro_now()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// The Lease's holder, if any.
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The Lease's resourceVersion.
pub fn resource_version(lease: &Lease) -> Option<&str> {
    lease.metadata.resource_version.as_deref()
}

/// `lease` renewed by its holder now (the resourceVersion kept: the replace is a CAS).
pub fn renewed(mut lease: Lease, duration: std::time::Duration) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.renew_time = Some(micro_now());
    spec.lease_duration_seconds = Some(seconds(duration));
    lease
}

/// `lease` taken by `holder` now: a new acquire time and one more transition.
pub fn taken(mut lease: Lease, holder: &str, duration: std::time::Duration) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(holder.to_owned());
    spec.acquire_time = Some(micro_now());
    spec.renew_time = Some(micro_now());
    spec.lease_duration_seconds = Some(seconds(duration));
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    lease
}

/// The member a member Lease stands for, while its member holds it.
pub fn member_of(lease: &Lease) -> Option<Member> {
    let labels = lease.metadata.labels.as_ref()?;
    if labels.get(ROLE_LABEL).map(String::as_str) != Some("member") {
        return None;
    }
    let name = labels.get(MEMBER_LABEL)?;
    if holder(lease) != Some(name.as_str()) {
        return None;
    }
    let address = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADDRESS_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    Some(Member {
        name: name.clone(),
        address,
    })
}

/// Whether a member marked its Lease as leaving (a graceful stop, meaning to come back).
pub fn is_leaving(lease: &Lease) -> bool {
    lease
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEAVING_ANNOTATION))
}

/// Replaces `lease` if nobody changed it since it was read (its resourceVersion).
pub async fn replace_lease(api: &Api<Lease>, lease: &Lease) -> Result<Lease, kube::Error> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    api.replace(&name, &PostParams::default(), lease).await
}

/// Deletes `lease` if nobody changed it since it was read.
pub async fn delete_lease(api: &Api<Lease>, lease: &Lease) -> Result<(), kube::Error> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version.clone(),
            uid: lease.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &params).await.map(|_| ())
}

/// The published ring as read from its ConfigMap, with the resourceVersion to CAS against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The ring.
    pub state: RingState,
    /// The ConfigMap's resourceVersion (`None`: no ConfigMap yet).
    pub resource_version: Option<String>,
    /// Who published it.
    pub coordinator: String,
}

/// Why a ring ConfigMap could not be read.
#[derive(Debug, thiserror::Error)]
#[error("ring ConfigMap {name}: {message}")]
pub struct BadRing {
    /// ConfigMap name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// Reads a ring ConfigMap.
pub fn decode_ring(cm: &ConfigMap) -> Result<Published, BadRing> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let bad = |message: String| BadRing {
        name: name.clone(),
        message,
    };
    let data = cm.data.clone().unwrap_or_default();
    let generation = data
        .get("generation")
        .ok_or_else(|| bad("no generation".into()))?
        .parse::<u64>()
        .map_err(|e| bad(format!("generation: {e}")))?;
    let members: Vec<Member> = serde_json::from_str(
        data.get("members")
            .ok_or_else(|| bad("no members".into()))?,
    )
    .map_err(|e| bad(format!("members: {e}")))?;
    Ok(Published {
        state: RingState::new(generation, members),
        resource_version: cm.metadata.resource_version.clone(),
        coordinator: data.get("coordinator").cloned().unwrap_or_default(),
    })
}

/// A ring ConfigMap's contents.
pub fn encode_ring(name: &str, ring: &str, state: &RingState, coordinator: &str) -> ConfigMap {
    let members = serde_json::to_string(&state.members).unwrap_or_else(|_| "[]".into());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(RING_LABEL.to_owned(), ring.to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("generation".to_owned(), state.generation.to_string()),
            ("members".to_owned(), members),
            ("coordinator".to_owned(), coordinator.to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

/// Publishes `members` as the next generation after `current`, with optimistic concurrency: a
/// create when there is no ConfigMap yet (AlreadyExists if someone else created it), otherwise
/// a replace at `current`'s resourceVersion (Conflict if someone else published meanwhile). Two
/// coordinators can therefore never publish two different rings with one generation.
pub async fn publish_ring(
    api: &Api<ConfigMap>,
    ring: &str,
    current: &Published,
    members: Vec<Member>,
    coordinator: &str,
) -> Result<Published, kube::Error> {
    let name = ring_configmap_name(ring);
    let state = RingState::new(current.state.generation.saturating_add(1), members);
    let mut cm = encode_ring(&name, ring, &state, coordinator);
    let written = match &current.resource_version {
        None => api.create(&PostParams::default(), &cm).await?,
        Some(rv) => {
            cm.metadata.resource_version = Some(rv.clone());
            api.replace(&name, &PostParams::default(), &cm).await?
        }
    };
    Ok(Published {
        state,
        resource_version: written.metadata.resource_version,
        coordinator: coordinator.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_round_trips_through_its_configmap() {
        let state = RingState::new(
            7,
            vec![
                Member {
                    name: "ringscale-1".into(),
                    address: "10.0.0.2:9000".into(),
                },
                Member {
                    name: "ringscale-0".into(),
                    address: "10.0.0.1:9000".into(),
                },
            ],
        );
        let cm = encode_ring("r-ring", "r", &state, "ringscale-0");
        let back = decode_ring(&cm).unwrap();
        assert_eq!(back.state, state);
        assert_eq!(back.coordinator, "ringscale-0");

        let mut broken = cm;
        broken
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("generation".into(), "seven".into());
        let err = decode_ring(&broken).unwrap_err();
        assert!(err.to_string().contains("generation"), "{err}");
    }

    #[test]
    fn a_member_lease_stands_for_its_member_only_while_it_holds_it() {
        let lease = new_lease(
            "r-member-a",
            "r",
            "member",
            "a",
            std::time::Duration::from_secs(15),
            Some("10.0.0.1:9000"),
        );
        assert_eq!(
            member_of(&lease),
            Some(Member {
                name: "a".into(),
                address: "10.0.0.1:9000".into()
            })
        );
        let taken = taken(lease, "coordinator-b", std::time::Duration::from_secs(15));
        assert_eq!(member_of(&taken), None);
        assert_eq!(
            taken.spec.as_ref().and_then(|s| s.lease_transitions),
            Some(1)
        );
    }
}
