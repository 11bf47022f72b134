//! The status page on the admin port (`/status`): the ring, who owns what, and per ScaledObject
//! its owner, last poll, values, staleness and replicas. Server-rendered HTML that reloads
//! itself every two seconds, so it works without JavaScript.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use ringscale_api::ScaledObject;
use ringscale_coordinator::Ownership;
use ringscale_operator::lookup::ClusterLookup;
use ringscale_operator::scope::{Scope, Scoped};
use ringscale_replication::Store;
use ringscale_ring::ObjectId;
use tokio::sync::watch;

/// What the page reads.
pub(crate) struct Sources {
    pub ownership: watch::Receiver<Ownership>,
    pub store: Arc<Store>,
    pub scaled_objects: Scoped<ScaledObject>,
    pub cluster: ClusterLookup,
    /// The ring's name (its Leases and ConfigMap).
    pub ring: String,
    /// What the ring watches.
    pub scope: Scope,
}

/// What a ring watches, in words.
fn describe(scope: &Scope) -> String {
    let namespaces = if scope.namespaces().is_empty() {
        "every namespace".to_owned()
    } else {
        format!("namespaces {}", scope.namespaces().join(", "))
    };
    match scope.selector() {
        Some(selector) => format!("{namespaces}; ScaledObjects and ScaledJobs matching {selector}"),
        None => format!("{namespaces}; every ScaledObject and ScaledJob"),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the page.
pub(crate) fn render(s: &Sources) -> String {
    let ownership = s.ownership.borrow().clone();
    let now = ringscale_replication::now();
    let mut sos: Vec<Arc<ScaledObject>> = s.scaled_objects.state();
    sos.sort_by_key(|so| (so.metadata.namespace.clone(), so.metadata.name.clone()));
    let mut owned: BTreeMap<String, usize> = ownership
        .ring
        .members()
        .iter()
        .map(|m| (m.name.clone(), 0))
        .collect();
    let mut rows = String::new();
    for so in &sos {
        let ns = so.metadata.namespace.clone().unwrap_or_default();
        let name = so.metadata.name.clone().unwrap_or_default();
        let id = ObjectId::scaled_object(ns.as_str(), name.as_str());
        let owner = ownership.owner(&id.ring_key()).map(|m| m.name.clone());
        if let Some(o) = &owner {
            *owned.entry(o.clone()).or_default() += 1;
        }
        let records = s.store.object(&id);
        let mut values = String::new();
        let mut last_poll = "never".to_owned();
        let mut staleness = "—".to_owned();
        for (key, record) in &records {
            let age = now.saturating_duration_since(record.polled_at);
            last_poll = format!("{:.1} s ago", age.as_secs_f64());
            staleness = format!("{:?}", record.freshness(now));
            let shown = match &record.error {
                Some(e) => format!("error: {e}"),
                None => format!("{}", record.value),
            };
            let _ = write!(
                values,
                "<div><code>{}</code> = {}{}</div>",
                escape(&key.metric_name),
                escape(&shown),
                if record.active { " (active)" } else { "" }
            );
        }
        let t = &so.spec.scale_target_ref;
        let replicas = s
            .cluster
            .target_replicas(so)
            .map_or("—".to_owned(), |(desired, ready)| {
                format!("{ready}/{desired}")
            });
        let _ = write!(
            rows,
            "<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            escape(&ns),
            escape(&name),
            escape(owner.as_deref().unwrap_or("—")),
            escape(&last_poll),
            if values.is_empty() {
                "—".to_owned()
            } else {
                values
            },
            escape(&staleness),
            escape(&t.name),
            escape(&replicas),
        );
    }
    let mut members = String::new();
    for (member, count) in &owned {
        let address = ownership
            .ring
            .members()
            .iter()
            .find(|m| m.name == *member)
            .map_or("", |m| m.address.as_str());
        let me = if **member == *ownership.member {
            " (this replica)"
        } else {
            ""
        };
        let _ = write!(
            members,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            escape(member),
            me,
            escape(address),
            count
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>ringscale — {member}</title>\
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}</style>\
</head><body>\
<h1>ringscale replica {member}</h1>\
<p id=\"ring\">Ring <b>{ring}</b>, generation <b>{generation}</b>, {count} members; this replica is {state}.</p>\
<p id=\"scope\">Watches {scope}.</p>\
<h2>Members</h2><table id=\"members\"><tr><th>member</th><th>address</th><th>ScaledObjects owned</th></tr>{members}</table>\
<h2>ScaledObjects</h2><table id=\"objects\"><tr><th>ScaledObject</th><th>owner</th><th>last poll</th><th>values</th><th>staleness</th><th>target ready/desired</th></tr>{rows}</table>\
</body></html>\n",
        member = escape(&ownership.member),
        ring = escape(&s.ring),
        scope = escape(&describe(&s.scope)),
        generation = ownership.generation(),
        count = ownership.ring.members().len(),
        state = if ownership.active {
            "active"
        } else {
            "not active (no valid member Lease)"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::{Scope, describe, escape};

    #[test]
    fn the_scope_is_said_in_words() {
        assert_eq!(
            describe(&Scope::default()),
            "every namespace; every ScaledObject and ScaledJob"
        );
        assert_eq!(
            describe(&Scope::new(["b".to_owned(), "a".to_owned()], "tier=gold")),
            "namespaces a, b; ScaledObjects and ScaledJobs matching tier=gold"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
