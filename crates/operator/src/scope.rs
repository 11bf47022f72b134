//! What a ring watches: every namespace or a list of them (KEDA's `WATCH_NAMESPACE`), and of
//! the ScaledObjects and ScaledJobs there those matching a label selector (KEDA's
//! `WATCH_LABEL_SELECTOR`). Several rings (distinct ring names) with disjoint scopes share a
//! cluster without touching each other's objects.
//!
//! A scoped watch is one reflector per namespace, each with its own store: a namespace's watch
//! that relists replaces only that namespace's objects (one store fed by several namespaces'
//! watches would let one relist drop every other namespace's objects).

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::debug;

/// The namespaces and objects a replica watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Namespaces watched (sorted, each once); empty: every namespace.
    namespaces: Vec<String>,
    /// Label selector of the ScaledObjects and ScaledJobs polled; `None`: all of them.
    selector: Option<String>,
}

impl Scope {
    /// A scope: `namespaces` (empty: all) and a label selector (empty: none).
    pub fn new(namespaces: impl IntoIterator<Item = String>, selector: &str) -> Scope {
        let mut namespaces: Vec<String> = namespaces
            .into_iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let selector = selector.trim();
        Scope {
            namespaces,
            selector: (!selector.is_empty()).then(|| selector.to_owned()),
        }
    }

    /// The namespaces watched; empty: all.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The ScaledObjects' and ScaledJobs' label selector, if any.
    pub fn selector(&self) -> Option<&str> {
        self.selector.as_deref()
    }

    /// The namespaces watched with `extra` added (when scoped; all stays all).
    pub(crate) fn with(&self, extra: &str) -> Vec<String> {
        let mut namespaces = self.namespaces.clone();
        if !namespaces.is_empty() && !namespaces.iter().any(|n| n == extra) {
            namespaces.push(extra.to_owned());
            namespaces.sort();
        }
        namespaces
    }

    /// The watch configuration of ScaledObjects and ScaledJobs.
    pub(crate) fn objects(&self) -> watcher::Config {
        match &self.selector {
            Some(s) => watcher::Config::default().labels(s),
            None => watcher::Config::default(),
        }
    }
}

/// Reflector stores of one kind over a scope: one store per watched namespace, or one for the
/// cluster. Read like a single [`Store`].
pub struct Scoped<K: Resource<DynamicType = ()> + 'static> {
    /// (namespace, its store); one entry with no namespace when the whole cluster is watched.
    stores: Arc<[(Option<String>, Store<K>)]>,
}

impl<K: Resource<DynamicType = ()> + 'static> std::fmt::Debug for Scoped<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let namespaces: Vec<&str> = self
            .stores
            .iter()
            .map(|(ns, _)| ns.as_deref().unwrap_or("*"))
            .collect();
        f.debug_struct("Scoped")
            .field("namespaces", &namespaces)
            .finish_non_exhaustive()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Scoped<K> {
    fn clone(&self) -> Self {
        Scoped {
            stores: Arc::clone(&self.stores),
        }
    }
}

impl<K> Scoped<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The object `key` names, if its namespace is watched and the object is there.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        self.stores
            .iter()
            .find(|(ns, _)| ns.is_none() || *ns == key.namespace)
            .and_then(|(_, store)| store.get(key))
    }

    /// Every object of every watched namespace.
    pub fn state(&self) -> Vec<Arc<K>> {
        match &*self.stores {
            [(_, only)] => only.state(),
            stores => stores.iter().flat_map(|(_, s)| s.state()).collect(),
        }
    }

    /// Waits until every namespace's store has its first full list.
    pub async fn wait_until_ready(&self) {
        for (_, store) in self.stores.iter() {
            let _ = store.wait_until_ready().await;
        }
    }
}

/// Starts the watches of `K` in `namespaces` (empty: the whole cluster) with `config`, each
/// object trimmed by `trim` before it is stored, and `on_event` told of every event.
pub(crate) fn watch_scoped<K, F>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
    trim: fn(&mut K),
    on_event: F,
) -> (Scoped<K>, Vec<JoinHandle<()>>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(&watcher::Event<K>) + Clone + Send + 'static,
{
    let apis: Vec<(Option<String>, Api<K>)> = if namespaces.is_empty() {
        vec![(None, Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns)))
            .collect()
    };
    let mut stores = Vec::with_capacity(apis.len());
    let mut tasks = Vec::with_capacity(apis.len());
    for (ns, api) in apis {
        let (store, task) = reflect_one(api, config.clone(), trim, on_event.clone());
        stores.push((ns, store));
        tasks.push(task);
    }
    (
        Scoped {
            stores: Arc::from(stores),
        },
        tasks,
    )
}

/// One reflector: a watch of `api` into a store, backed off on errors.
pub(crate) fn reflect_one<K, F>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    on_event: F,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(&watcher::Event<K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(ringscale_coordinator::WatchBackoff::new())
        .modify(trim)
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => on_event(&event),
                Err(e) => debug!(kind = %K::kind(&()), error = %e, "watch interrupted"),
            }
        }
    });
    (reader, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_lists_each_namespace_once_and_all_stays_all() {
        let s = Scope::new(
            [
                "b".to_owned(),
                " a ".to_owned(),
                "b".to_owned(),
                String::new(),
            ],
            " tier=gold ",
        );
        assert_eq!(s.namespaces(), ["a", "b"]);
        assert_eq!(s.selector(), Some("tier=gold"));
        assert_eq!(s.with("keda"), ["a", "b", "keda"]);
        assert_eq!(s.with("a"), ["a", "b"]);
        let all = Scope::new(Vec::new(), "");
        assert!(all.namespaces().is_empty());
        assert_eq!(all.selector(), None);
        assert!(all.with("keda").is_empty(), "all namespaces include it");
    }

    #[test]
    fn a_namespaced_store_answers_for_its_namespace_only() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cm = |ns: &str, name: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.to_owned()),
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut stores = Vec::new();
        for ns in ["a", "b"] {
            let (reader, mut writer) = reflector::store::<ConfigMap>();
            writer.apply_watcher_event(&watcher::Event::Init);
            writer.apply_watcher_event(&watcher::Event::InitApply(cm(ns, "x")));
            writer.apply_watcher_event(&watcher::Event::InitDone);
            stores.push((Some(ns.to_owned()), reader));
        }
        let scoped = Scoped {
            stores: Arc::from(stores),
        };
        let key = |ns: &str| ObjectRef::<ConfigMap>::new("x").within(ns);
        assert_eq!(
            scoped
                .get(&key("b"))
                .and_then(|c| c.metadata.namespace.clone()),
            Some("b".to_owned())
        );
        assert!(scoped.get(&key("c")).is_none(), "not a watched namespace");
        assert_eq!(scoped.state().len(), 2);
    }
}
