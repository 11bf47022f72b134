//! The object store: one global resourceVersion, compare-and-swap writes, and a bounded event
//! log from which watches resume (older resourceVersions get `410 Gone`, as from etcd after
//! compaction).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

/// A stored object: its JSON value, and its serialization, made once on first use and shared
/// by every list, get and watch line that serves it as stored.
#[derive(Debug)]
pub struct Object {
    /// The object.
    pub value: Value,
    json: std::sync::OnceLock<bytes::Bytes>,
}

impl Object {
    /// Wraps a value.
    pub fn new(value: Value) -> Self {
        Self {
            value,
            json: std::sync::OnceLock::new(),
        }
    }

    /// The object serialized as JSON.
    pub fn json(&self) -> &bytes::Bytes {
        self.json
            .get_or_init(|| bytes::Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl std::ops::Deref for Object {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// A shared stored object.
pub type Obj = Arc<Object>;

/// Group and plural resource: objects of every version of a kind share one table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
}

impl GroupResource {
    /// A group-resource.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }
}

/// Namespace and name; the namespace is empty for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace, or "".
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One change, as watches see it.
#[derive(Clone, Debug)]
pub struct Event {
    /// Table of the object.
    pub resource: GroupResource,
    /// Key of the object.
    pub key: ObjKey,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (for deletions: the last state, with the deletion's
    /// resourceVersion).
    pub object: Obj,
    /// The object before the change (modifications and deletions).
    pub previous: Option<Obj>,
    /// resourceVersion of the change.
    pub rv: u64,
    /// The watch line `{"type":..,"object":..}` serialized once for every watcher that sees
    /// the event as is (the watch cache of a real API server shares it the same way).
    line: std::sync::OnceLock<bytes::Bytes>,
}

impl Event {
    /// The event's natural watch type.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }

    /// The watch line of this event as stored, built on first use from the object's cached
    /// JSON.
    pub fn line(&self) -> bytes::Bytes {
        self.line
            .get_or_init(|| {
                let json = self.object.json();
                let mut out = Vec::with_capacity(json.len() + 32);
                out.extend_from_slice(b"{\"type\":\"");
                out.extend_from_slice(self.type_name().as_bytes());
                out.extend_from_slice(b"\",\"object\":");
                out.extend_from_slice(json);
                out.extend_from_slice(b"}\n");
                bytes::Bytes::from(out)
            })
            .clone()
    }
}

/// One line of a watch stream: `{"type": kind, "object": object}` and a newline.
pub fn watch_line(kind: &str, object: &Value) -> bytes::Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut out = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    out.push(b'\n');
    bytes::Bytes::from(out)
}

/// A write that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The key exists (create).
    Exists,
    /// The key does not exist.
    NotFound,
    /// The object changed since the expected resourceVersion; carries the current one.
    Conflict(u64),
}

/// A watch that cannot start: the requested resourceVersion is older than the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooOld {
    /// Oldest resourceVersion a watch can start from.
    pub oldest: u64,
}

#[derive(Debug)]
struct Entry {
    object: Obj,
    rv: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    tables: HashMap<GroupResource, BTreeMap<ObjKey, Entry>>,
    log: VecDeque<Arc<Event>>,
    /// Watches may start from any resourceVersion ≥ this.
    floor: u64,
}

/// The start of a watch: logged events, then a receiver of the following ones.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Capacity of the broadcast channel to watchers. A watcher more than this many events
/// behind is closed (it re-watches from its last resourceVersion), as the API server closes
/// watchers whose buffer is full.
const BROADCAST_CAPACITY: usize = 16_384;

/// The store.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    window: usize,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    /// The objects, in key order.
    pub items: Vec<Obj>,
    /// resourceVersion of the store when the page was read.
    pub rv: u64,
    /// Key of the last item when more items follow.
    pub next: Option<ObjKey>,
    /// How many matching items follow, when known.
    pub remaining: usize,
}

impl Store {
    /// An empty store whose event log keeps the last `window` events.
    pub fn new(window: usize) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                floor: 1,
                ..Inner::default()
            }),
            tx,
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    /// An object and its resourceVersion.
    pub fn get(&self, resource: &GroupResource, key: &ObjKey) -> Option<(Obj, u64)> {
        let inner = self.lock();
        inner
            .tables
            .get(resource)?
            .get(key)
            .map(|e| (e.object.clone(), e.rv))
    }

    /// Number of objects of a resource.
    pub fn count(&self, resource: &GroupResource) -> usize {
        self.lock().tables.get(resource).map_or(0, BTreeMap::len)
    }

    /// Lists objects in key order, optionally in one namespace, after a key, matching a
    /// filter, at most `limit` (0 = all).
    pub fn list(
        &self,
        resource: &GroupResource,
        namespace: Option<&str>,
        after: Option<&ObjKey>,
        limit: usize,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Page {
        let inner = self.lock();
        let rv = inner.rv;
        let Some(table) = inner.tables.get(resource) else {
            return Page {
                items: Vec::new(),
                rv,
                next: None,
                remaining: 0,
            };
        };
        let lower = match (after, namespace) {
            (Some(key), _) => std::ops::Bound::Excluded(key.clone()),
            (None, Some(ns)) => std::ops::Bound::Included(ObjKey::new(ns, "")),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        for (key, entry) in table.range((lower, std::ops::Bound::Unbounded)) {
            if namespace.is_some_and(|ns| key.namespace != ns) {
                break;
            }
            if !filter(&entry.object) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                remaining += 1;
                continue;
            }
            items.push(entry.object.clone());
            next = Some(key.clone());
        }
        if remaining == 0 {
            next = None;
        }
        Page {
            items,
            rv,
            next,
            remaining,
        }
    }

    /// Every object of a resource with its key (for controllers and garbage collection).
    pub fn snapshot(&self, resource: &GroupResource) -> Vec<(ObjKey, Obj)> {
        let inner = self.lock();
        inner
            .tables
            .get(resource)
            .map(|t| {
                t.iter()
                    .map(|(k, e)| (k.clone(), e.object.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every resource that has objects.
    pub fn resources(&self) -> Vec<GroupResource> {
        self.lock()
            .tables
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Creates an object; `metadata.resourceVersion` is set to the new resourceVersion.
    pub fn create(
        &self,
        resource: &GroupResource,
        key: &ObjKey,
        mut object: Value,
    ) -> Result<Obj, StoreError> {
        let mut inner = self.lock();
        if inner
            .tables
            .get(resource)
            .is_some_and(|t| t.contains_key(key))
        {
            return Err(StoreError::Exists);
        }
        let rv = inner.rv + 1;
        set_rv(&mut object, rv);
        let object = Arc::new(Object::new(object));
        inner.rv = rv;
        inner.tables.entry(resource.clone()).or_default().insert(
            key.clone(),
            Entry {
                object: object.clone(),
                rv,
            },
        );
        self.publish(
            &mut inner,
            Event {
                resource: resource.clone(),
                key: key.clone(),
                kind: EventKind::Added,
                object: object.clone(),
                previous: None,
                rv,
                line: Default::default(),
            },
        );
        Ok(object)
    }

    /// Replaces an object if it is still at `expected` resourceVersion.
    pub fn replace(
        &self,
        resource: &GroupResource,
        key: &ObjKey,
        expected: u64,
        mut object: Value,
    ) -> Result<Obj, StoreError> {
        let mut inner = self.lock();
        let current = inner
            .tables
            .get(resource)
            .and_then(|t| t.get(key))
            .map(|e| (e.rv, e.object.clone()));
        let Some((current_rv, previous)) = current else {
            return Err(StoreError::NotFound);
        };
        if current_rv != expected {
            return Err(StoreError::Conflict(current_rv));
        }
        let rv = inner.rv + 1;
        set_rv(&mut object, rv);
        let object = Arc::new(Object::new(object));
        inner.rv = rv;
        if let Some(table) = inner.tables.get_mut(resource) {
            table.insert(
                key.clone(),
                Entry {
                    object: object.clone(),
                    rv,
                },
            );
        }
        self.publish(
            &mut inner,
            Event {
                resource: resource.clone(),
                key: key.clone(),
                kind: EventKind::Modified,
                object: object.clone(),
                previous: Some(previous),
                rv,
                line: Default::default(),
            },
        );
        Ok(object)
    }

    /// Removes an object if it is still at `expected` resourceVersion (when given). The
    /// returned object carries the deletion's resourceVersion.
    pub fn remove(
        &self,
        resource: &GroupResource,
        key: &ObjKey,
        expected: Option<u64>,
    ) -> Result<Obj, StoreError> {
        let mut inner = self.lock();
        let current = inner
            .tables
            .get(resource)
            .and_then(|t| t.get(key))
            .map(|e| (e.rv, e.object.clone()));
        let Some((current_rv, previous)) = current else {
            return Err(StoreError::NotFound);
        };
        if expected.is_some_and(|e| e != current_rv) {
            return Err(StoreError::Conflict(current_rv));
        }
        if let Some(table) = inner.tables.get_mut(resource) {
            table.remove(key);
        }
        let rv = inner.rv + 1;
        inner.rv = rv;
        let mut last = previous.value.clone();
        set_rv(&mut last, rv);
        let object = Arc::new(Object::new(last));
        self.publish(
            &mut inner,
            Event {
                resource: resource.clone(),
                key: key.clone(),
                kind: EventKind::Deleted,
                object: object.clone(),
                previous: Some(previous),
                rv,
                line: Default::default(),
            },
        );
        Ok(object)
    }

    fn publish(&self, inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        inner.log.push_back(event.clone());
        while inner.log.len() > self.window {
            if let Some(dropped) = inner.log.pop_front() {
                inner.floor = dropped.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// Starts a watch: the logged events after `from` and a receiver for the ones to come,
    /// taken atomically so that no event is missed or seen twice.
    pub fn watch_from(&self, from: u64) -> Result<WatchStart, TooOld> {
        let inner = self.lock();
        if from < inner.floor {
            return Err(TooOld {
                oldest: inner.floor,
            });
        }
        let rx = self.tx.subscribe();
        let backlog = inner.log.iter().filter(|e| e.rv > from).cloned().collect();
        Ok((backlog, rx))
    }

    /// A receiver of future events (controllers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Forgets the event log, as etcd compaction does: watches from older resourceVersions
    /// then fail with 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.floor = inner.rv;
    }

    /// Oldest resourceVersion a watch can start from.
    pub fn floor(&self) -> u64 {
        self.lock().floor
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_owned(), Value::String(rv.to_string()));
    }
}

/// Parses a resourceVersion string ("" means none).
pub fn parse_rv(text: &str) -> Option<u64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}})
    }

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let store = Store::new(100);
        let r = GroupResource::new("", "configmaps");
        let k = ObjKey::new("ns", "a");
        let created = store.create(&r, &k, obj("a")).unwrap();
        let rv1: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let replaced = store.replace(&r, &k, rv1, obj("a")).unwrap();
        let rv2: u64 = replaced["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv1);
        assert_eq!(
            store.replace(&r, &k, rv1, obj("a")),
            Err(StoreError::Conflict(rv2))
        );
        assert_eq!(
            store.create(&r, &k, obj("a")).unwrap_err(),
            StoreError::Exists
        );
        let deleted = store.remove(&r, &k, None).unwrap();
        assert!(
            deleted["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > rv2
        );
    }

    #[test]
    fn watches_resume_from_the_log_and_older_versions_are_gone() {
        let store = Store::new(2);
        let r = GroupResource::new("", "configmaps");
        for name in ["a", "b", "c"] {
            store
                .create(&r, &ObjKey::new("ns", name), obj(name))
                .unwrap();
        }
        let now = store.rv();
        let (backlog, _) = store.watch_from(now - 2).unwrap();
        assert_eq!(backlog.len(), 2);
        assert!(
            store.watch_from(now - 3).is_err(),
            "the first event fell out of the window"
        );
        store.compact();
        assert!(store.watch_from(now - 1).is_err());
        assert!(store.watch_from(now).is_ok());
    }

    #[test]
    fn lists_page_in_key_order_within_a_namespace() {
        let store = Store::new(100);
        let r = GroupResource::new("", "configmaps");
        for (ns, name) in [("a", "1"), ("b", "1"), ("b", "2"), ("b", "3"), ("c", "1")] {
            store
                .create(
                    &r,
                    &ObjKey::new(ns, name),
                    json!({"metadata": {"name": name, "namespace": ns}}),
                )
                .unwrap();
        }
        let page = store.list(&r, Some("b"), None, 2, &|_| true);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.remaining, 1);
        let rest = store.list(&r, Some("b"), page.next.as_ref(), 2, &|_| true);
        assert_eq!(rest.items.len(), 1);
        assert!(rest.next.is_none());
        assert_eq!(store.list(&r, None, None, 0, &|_| true).items.len(), 5);
    }
}
