//! The ring: which replica owns which ScaledObject or ScaledJob.
//!
//! The coordinator publishes a [`RingState`] — a generation and the member list. Every replica
//! builds the same [`Ring`] from it and computes ownership locally: a consistent-hash ring with
//! [`VIRTUAL_NODES`] virtual nodes per member, looked up [`PROBES`] times per key, hashed with
//! XXH3 over explicit bytes (never std's `DefaultHasher`, whose output may change between Rust
//! versions), so replicas of different builds agree. Keys are `keda.sh/<Kind>/<namespace>/<name>`.
//! `tests/golden.rs` pins the owners of a fixed key set so that any change to hashing is caught.
//!
//! This crate does no I/O.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

/// Virtual nodes per member.
pub const VIRTUAL_NODES: u16 = 256;

/// How many times an object looks at the ring (multi-probe consistent hashing): the object goes to
/// whichever of its probes lands closest before a point. With one probe, 256 virtual nodes leave
/// each member's share of the ring with a spread of about 1/√256 = 6 %, so with 16 members the
/// busiest holds 1.13 × the mean in a typical ring and over 1.15 × in about a third of them;
/// eight probes bring the typical figure to 1.08 × — little above the noise of the keys
/// themselves — at the cost of eight lookups instead of one. Adding a member can only bring a
/// probe closer to one of *its* points, so keys still move only to it (and only from a removed
/// member), as with one probe.
pub const PROBES: u8 = 8;

/// A replica in the ring.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Stable replica name (the StatefulSet pod name), which places it on the ring.
    pub name: String,
    /// Address of its replication gRPC endpoint (`host:port`).
    pub address: String,
}

/// What the coordinator publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// Monotonic generation; bumped on every membership change.
    pub generation: u64,
    /// Members, sorted by name.
    pub members: Vec<Member>,
}

impl RingState {
    /// A state with members sorted by name and deduplicated.
    pub fn new(generation: u64, mut members: Vec<Member>) -> Self {
        members.sort();
        members.dedup_by(|a, b| a.name == b.name);
        RingState {
            generation,
            members,
        }
    }

    /// Whether `name` is a member.
    pub fn contains(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }
}

/// The object a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A ScaledObject.
    ScaledObject,
    /// A ScaledJob.
    ScaledJob,
}

impl Kind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ScaledObject => "ScaledObject",
            Kind::ScaledJob => "ScaledJob",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ScaledObject or ScaledJob: its kind, namespace and name. The identity every part of
/// ringscale keys an object by (the controller's schedule, the records, replication, the
/// metrics API); its ring key is [`ObjectId::ring_key`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// ScaledObject or ScaledJob.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectId {
    /// An object.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A ScaledObject.
    pub fn scaled_object(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId::new(Kind::ScaledObject, namespace, name)
    }

    /// A ScaledJob.
    pub fn scaled_job(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId::new(Kind::ScaledJob, namespace, name)
    }

    /// Whether this is the ScaledObject `namespace/name`.
    pub fn is_scaled_object(&self, namespace: &str, name: &str) -> bool {
        self.kind == Kind::ScaledObject && self.namespace == namespace && self.name == name
    }

    /// Its key on the ring.
    pub fn ring_key(&self) -> ObjectKey {
        ObjectKey::new(self.kind, &self.namespace, &self.name)
    }
}

/// `ScaledObject default/orders`.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The ring key of an object: `keda.sh/<Kind>/<namespace>/<name>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key of an object.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey(format!("keda.sh/{}/{namespace}/{name}", kind.as_str()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes with XXH3 over exactly the bytes written.
#[derive(Clone, Copy, Debug, Default)]
pub struct StableHash;

impl BuildHasher for StableHash {
    type Hasher = xxhash_rust::xxh3::Xxh3;

    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3::new()
    }
}

/// A point on the ring: a member's `replica`-th virtual node. Its hash input is the member's
/// name, a zero byte and the replica number (big-endian), written explicitly so that it cannot
/// depend on how std hashes strings.
#[derive(Clone, Debug)]
struct Point {
    member: usize,
    name: std::sync::Arc<str>,
    replica: u16,
    /// Where the point sits: the hash of the fields above.
    position: u64,
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.name.as_bytes());
        state.write(&[0]);
        state.write(&self.replica.to_be_bytes());
    }
}

/// What is hashed for an object's `probe`-th look at the ring: the bytes of its key, then (for
/// probes after the first) a 0xff byte — which never occurs in UTF-8 — and the probe number.
struct Probe<'a> {
    key: &'a str,
    probe: u8,
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.key.as_bytes());
        if self.probe > 0 {
            state.write(&[0xff, self.probe]);
        }
    }
}

/// Ownership computed from a [`RingState`].
pub struct Ring {
    state: RingState,
    points: hashring::HashRing<Point, StableHash>,
}

impl Ring {
    /// Builds the ring of `state`.
    pub fn new(state: RingState) -> Ring {
        let mut points = hashring::HashRing::with_hasher(StableHash);
        let mut all = Vec::with_capacity(state.members.len() * usize::from(VIRTUAL_NODES));
        for (member, m) in state.members.iter().enumerate() {
            let name: std::sync::Arc<str> = m.name.as_str().into();
            for replica in 0..VIRTUAL_NODES {
                let mut point = Point {
                    member,
                    name: name.clone(),
                    replica,
                    position: 0,
                };
                point.position = StableHash.hash_one(&point);
                all.push(point);
            }
        }
        points.batch_add(all);
        Ring { state, points }
    }

    /// The published state this ring was built from.
    pub fn state(&self) -> &RingState {
        &self.state
    }

    /// The generation.
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.state.members
    }

    /// The member owning `key`, or `None` for an empty ring.
    pub fn owner(&self, key: &ObjectKey) -> Option<&Member> {
        self.owner_with_probes(key, PROBES)
    }

    /// The owner `key` would have with `probes` probes (at least one). Only [`PROBES`] gives the
    /// ring's real ownership; other counts exist to measure the design (`benches/balance.rs`).
    pub fn owner_with_probes(&self, key: &ObjectKey, probes: u8) -> Option<&Member> {
        let mut best: Option<(u64, usize)> = None;
        for probe in 0..probes.max(1) {
            let at = Probe {
                key: key.as_str(),
                probe,
            };
            let point = self.points.get(&at)?;
            let distance = point.position.wrapping_sub(StableHash.hash_one(&at));
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, point.member));
            }
        }
        self.state.members.get(best?.1)
    }

    /// Whether the member named `name` owns `key`.
    pub fn owns(&self, name: &str, key: &ObjectKey) -> bool {
        self.owner(key).is_some_and(|m| m.name == name)
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("generation", &self.state.generation)
            .field("members", &self.state.members)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                name: format!("ringscale-{i}"),
                address: format!("10.0.0.{i}:9100"),
            })
            .collect()
    }

    #[test]
    fn an_empty_ring_owns_nothing_and_one_member_owns_everything() {
        let key = ObjectKey::new(Kind::ScaledObject, "ns", "a");
        assert!(Ring::new(RingState::default()).owner(&key).is_none());
        let ring = Ring::new(RingState::new(1, members(1)));
        assert!(ring.owns("ringscale-0", &key));
        assert_eq!(key.as_str(), "keda.sh/ScaledObject/ns/a");
    }

    #[test]
    fn an_object_id_names_its_kind_and_keys_the_ring_as_before() {
        let so = ObjectId::scaled_object("ns", "a");
        let sj = ObjectId::scaled_job("ns", "a");
        assert_ne!(
            so, sj,
            "a ScaledObject and a ScaledJob of one name are two objects"
        );
        assert_eq!(so.ring_key(), ObjectKey::new(Kind::ScaledObject, "ns", "a"));
        assert_eq!(sj.ring_key().as_str(), "keda.sh/ScaledJob/ns/a");
        assert_eq!(so.to_string(), "ScaledObject ns/a");
        assert!(so.is_scaled_object("ns", "a") && !sj.is_scaled_object("ns", "a"));
    }

    #[test]
    fn states_are_normalised() {
        let mut m = members(3);
        m.reverse();
        m.push(m[0].clone());
        let state = RingState::new(4, m);
        assert_eq!(state.members, members(3));
        assert!(state.contains("ringscale-1"));
        let json = serde_json::to_string(&state).unwrap_or_default();
        assert_eq!(serde_json::from_str::<RingState>(&json).ok(), Some(state));
    }
}
