//! Scenario 9: the API server restarts as a real one does (down a minute, watches cut, a watch
//! cache that starts over, 403 while its authorizer warms up), and the poll-gap sampler the
//! restart scenarios share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::faults::RingHistory;
use crate::{Args, Check, Cluster};

/// Per object: (when sampled, seq, age ms) of each sample.
type Samples = Arc<Mutex<HashMap<String, Vec<(Instant, u64, u64)>>>>;

/// Samples every replica's records every 250 ms, to tell how long each object went unpolled.
/// Every replica is asked, not one: an owner's own cache holds each of its polls, while a peer's
/// copy of an unchanged value is refreshed only every few polls (replication sends a re-poll
/// that read the same only when the peer's copy would grow too old).
pub(crate) struct PollGaps {
    samples: Samples,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PollGaps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PollGaps {
    /// Starts sampling every replica of `admins` (admin ports, updated as replicas restart) that
    /// answers.
    pub(crate) fn start(admins: Arc<Mutex<Vec<u16>>>) -> Self {
        let samples: Samples = Arc::default();
        let out = Arc::clone(&samples);
        // Records only: the objects' namespace does not matter.
        let http = crate::Prober::new("default");
        let task = tokio::spawn(async move {
            loop {
                let ports = admins
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let mut answers = Vec::new();
                for port in ports {
                    if let Ok((200, body)) = http.get(port, "/records").await {
                        answers.push((Instant::now(), body));
                    }
                }
                for (now, body) in answers {
                    let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
                        continue;
                    };
                    let mut samples = out.lock().unwrap_or_else(PoisonError::into_inner);
                    for r in list.iter().filter(|r| r["kind"] == "ScaledObject") {
                        let key = format!(
                            "{}/{}",
                            r["namespace"].as_str().unwrap_or_default(),
                            r["name"].as_str().unwrap_or_default()
                        );
                        let seq = r["seq"].as_u64().unwrap_or(0);
                        let age = r["ageMs"].as_u64().unwrap_or(u64::MAX);
                        samples.entry(key).or_default().push((now, seq, age));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { samples, task }
    }

    /// The longest time any object went without a poll within `[from, to]` (a gap that began
    /// before `from` counts from `from`), and that object.
    pub(crate) fn longest_gap(&self, from: Instant, to: Instant) -> (Duration, String) {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut worst = (Duration::ZERO, String::new());
        for (object, list) in samples.iter() {
            // When each poll happened, as the samples tell (seq identifies a poll; several
            // replicas, and several samples, may show the same one).
            let mut by_seq: HashMap<u64, Instant> = HashMap::new();
            for (at, seq, age) in list {
                if let Some(t) = at.checked_sub(Duration::from_millis(*age)) {
                    by_seq
                        .entry(*seq)
                        .and_modify(|p| *p = (*p).min(t))
                        .or_insert(t);
                }
            }
            let mut polls: Vec<Instant> = by_seq.into_values().collect();
            polls.sort();
            let mut previous = from;
            for poll in polls.iter().copied().filter(|t| *t > from && *t <= to) {
                let gap = poll.saturating_duration_since(previous);
                if gap > worst.0 {
                    worst = (gap, object.clone());
                }
                previous = poll;
            }
            let open = to.saturating_duration_since(previous);
            if open > worst.0 {
                worst = (open, object.clone());
            }
        }
        worst
    }
}

/// The API server goes down for a minute (long form and short form alike: the failure it
/// reproduces needs the watches' backoff to grow) and comes back as a real one: watches cut,
/// old resourceVersions gone (410), 3 s of 403 while its authorizer warms up. With 200 objects
/// on 3 replicas: no member is declared dead for the outage (no new ring generation), no object
/// goes unpolled longer than 2 × pollingInterval + 10 s after the server is back, fewer than 50
/// write conflicts, and every replica ready again by itself.
pub(crate) async fn api_restart(args: &Args, _seed: u64) -> anyhow::Result<Vec<Check>> {
    const NAME: &str = "API-server restart";
    let down = Duration::from_secs(60);
    let warmup = Duration::from_secs(3);
    let polling_interval = Duration::from_secs(1);
    let mut wide = args.clone();
    wide.objects = args.objects.max(200);
    let cluster = Cluster::start(&wide, "restart").await?;
    let rings = RingHistory::start(cluster.client.clone(), &cluster.ring);
    let gaps = PollGaps::start(Arc::new(Mutex::new(
        cluster.replicas.iter().map(|r| r.admin).collect(),
    )));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rings.samples().last().map_or(0, |(_, g, _)| *g);
    println!(
        "{NAME}: {} objects, down {} s then {} s of 403; ring generation {before}",
        cluster.objects.len(),
        down.as_secs(),
        warmup.as_secs()
    );
    let started = Instant::now();
    cluster.api.sim()?.restart(down, warmup).await;
    let back = Instant::now() - warmup;
    // After the server is back: readiness, then a quiet spell to see polls and generations.
    let mut ready_after = None;
    while back.elapsed() < Duration::from_secs(40) {
        let mut ready = true;
        for r in &cluster.replicas {
            ready &= cluster.ready(r).await;
        }
        if ready {
            ready_after = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settle = back + Duration::from_secs(30);
    if let Some(wait) = settle.checked_duration_since(Instant::now()) {
        tokio::time::sleep(wait).await;
    }
    let ended = Instant::now();
    let bound = 2 * polling_interval + Duration::from_secs(10);
    let (gap, gap_object) = gaps.longest_gap(back, ended);
    let generations: Vec<u64> = rings
        .samples()
        .iter()
        .filter(|(at, _, _)| *at >= started)
        .map(|(_, g, _)| *g)
        .filter(|g| *g != before)
        .collect();
    let mut declared_dead = Vec::new();
    let mut panics = Vec::new();
    for r in &cluster.replicas {
        let log = std::fs::read_to_string(cluster.dir.join(format!("{}.log", r.name)))
            .unwrap_or_default();
        declared_dead.extend(
            log.lines()
                .filter(|l| l.contains("declared dead"))
                .map(|l| format!("{}: {}", r.name, l.chars().take(160).collect::<String>())),
        );
        if log.contains("panicked") {
            panics.push(r.name.clone());
        }
    }
    let log = cluster.api.requests().await?;
    let by_replica = |r: &&ringscale_kube_sim::RequestRecord| {
        r.user.starts_with("system:serviceaccount:ringscale:") && r.at >= started
    };
    let conflicts: Vec<String> = log
        .iter()
        .filter(by_replica)
        .filter(|r| r.code == 409)
        .map(|r| {
            format!(
                "{} {} {}/{}",
                r.verb,
                r.resource,
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let forbidden = log
        .iter()
        .filter(by_replica)
        .filter(|r| r.code == 403)
        .count();
    println!(
        "{NAME}: {forbidden} requests answered 403 during the warm-up; {} conflicts",
        conflicts.len()
    );
    Ok(vec![
        Check {
            scenario: NAME,
            invariant: "no member declared dead for the outage (the ring keeps its generation)"
                .into(),
            passed: declared_dead.is_empty() && generations.is_empty(),
            detail: format!(
                "generations published after: {generations:?}; {} declared dead{}",
                declared_dead.len(),
                declared_dead
                    .first()
                    .map_or(String::new(), |d| format!(" (first: {d})"))
            ),
        },
        Check {
            scenario: NAME,
            invariant: format!(
                "no object unpolled longer than 2 × pollingInterval + 10 s = {} s after the server is back",
                bound.as_secs()
            ),
            passed: gap <= bound,
            detail: format!("longest {:.2} s ({gap_object})", gap.as_secs_f64()),
        },
        Check {
            scenario: NAME,
            invariant: "fewer than 50 write conflicts (409) in total".into(),
            passed: conflicts.len() < 50,
            detail: format!(
                "{}{}",
                conflicts.len(),
                conflicts
                    .first()
                    .map_or(String::new(), |c| format!(" (first: {c})"))
            ),
        },
        Check {
            scenario: NAME,
            invariant: "every replica ready again within 40 s, without help, none panicked".into(),
            passed: ready_after.is_some() && panics.is_empty(),
            detail: format!(
                "{}; panicked: {panics:?}",
                ready_after.map_or("not ready".to_owned(), |d| format!(
                    "ready {:.2} s after the server came back",
                    d.as_secs_f64()
                ))
            ),
        },
    ])
}
