//! Helpers the workspace's tests share. A dev-dependency only: nothing here ships in the
//! binary.
//!
//! - [`free_port`]: a loopback port nothing listens on right now;
//! - [`eventually`] / [`eventually_every`]: poll an async check (every 50 ms, or as asked) until
//!   it gives a value, failing the test after a limit;
//! - [`eventually_ok`]: the same for a check that says why it is not there yet;
//! - [`until`]: poll a plain condition until it holds, failing the test after a limit;
//! - [`process`]: the replica-process harness of `chaos/` and `loadtest/` (for those binaries
//!   it is a normal dependency: they are test tools).

#![allow(clippy::panic, clippy::expect_used)]

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

pub mod process;

pub use process::{ReplicaProcess, ringscale_bin, try_free_port};

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    try_free_port().expect("the OS gives a free loopback port")
}

/// Polls `check` every 50 ms until it gives a value; fails the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(limit, Duration::from_millis(50), what, check).await
}

/// [`eventually`], polling every `every` (checks that ask an API server go easier on it).
pub async fn eventually_every<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Polls `check` every 250 ms until it succeeds; fails the test after `limit` with the last
/// reason it gave.
pub async fn eventually_ok<T, E, F, Fut>(limit: Duration, check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut check = check;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("gave up after {limit:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Polls `cond` every 10 ms until it holds; fails the test after `within`.
pub async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_return_the_first_value_and_fail_after_their_limit() {
        let n = AtomicU32::new(0);
        let v = eventually(Duration::from_secs(1), "three tries", || async {
            (n.fetch_add(1, Ordering::Relaxed) >= 2).then_some(7)
        })
        .await;
        assert_eq!((v, n.load(Ordering::Relaxed)), (7, 3));
        let ok: u32 = eventually_ok(Duration::from_secs(1), || async { Ok::<_, String>(1) }).await;
        assert_eq!(ok, 1);
        until("a true condition", Duration::from_secs(1), || true).await;
        let never = tokio::spawn(async {
            eventually(Duration::from_millis(100), "nothing", || async {
                None::<()>
            })
            .await;
        });
        assert!(never.await.unwrap_err().is_panic());
    }
}
