//! Events on ScaledObjects and ScaledJobs (`events.k8s.io/v1`), created by one task from a
//! bounded queue.
//!
//! kube's `Recorder` keeps every event it published for six minutes (to patch a series when one
//! repeats), scans that cache on every publish, and never shrinks it: a replica that takes over
//! 10,000 objects held tens of MiB of events for good and spent O(n²) time publishing them. The
//! operator publishes events only on transitions, so series are rare; like client-go's event
//! broadcaster, this publisher creates each event once and drops events (counted) when its
//! queue is full rather than growing without bound.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::controller::Stats;

/// Events waiting to be created, at most (client-go's broadcaster queues 1,000 too).
const QUEUE: usize = 1000;

/// The publishing side: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    tx: mpsc::Sender<Event>,
    controller: Arc<str>,
    instance: Arc<str>,
    stats: Arc<Stats>,
}

impl Events {
    /// Starts the task that creates the events; `published` counts the ones created.
    pub(crate) fn start(
        client: kube::Client,
        controller: &str,
        instance: &str,
        stats: Arc<Stats>,
    ) -> (Events, JoinHandle<()>) {
        let published = Arc::clone(&stats);
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                match Api::<Event>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &event)
                    .await
                {
                    Ok(_) => {
                        published.events.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(
                        error = %e,
                        reason = event.reason.as_deref().unwrap_or_default(),
                        "could not publish an event"
                    ),
                }
            }
        });
        (
            Events {
                tx,
                controller: controller.into(),
                instance: instance.into(),
                stats,
            },
            task,
        )
    }

    /// Queues an event about `regarding`; dropped (and counted) when the queue is full.
    pub(crate) fn emit(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note.chars().take(1024).collect()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.to_string()),
            reporting_instance: Some(self.instance.to_string()),
            ..Event::default()
        };
        if self.tx.try_send(event).is_err() {
            let n = self.stats.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(dropped = n, "the event queue is full: events dropped");
            }
        }
    }
}
