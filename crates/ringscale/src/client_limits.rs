//! Client-side limits on the replica's Kubernetes API requests, as a layer in the kube client:
//! a token bucket (QPS and burst, as client-go's `--kube-api-qps`/`--kube-api-burst`), a bound
//! on requests in flight, and back-off on throttling.
//!
//! The bound on requests in flight (watches excepted) bounds the client's connections: kube's
//! client speaks HTTP/1.1, so every concurrent request has a connection of its own, and its pool
//! keeps idle connections (with their TLS state and buffers grown by the largest response) for
//! 90 s. Unbounded, a replica taking over a few thousand objects opened hundreds of connections
//! to the API server at once, and held them. kube's client already retries a `429 Too Many Requests` (and 503)
//! after the `Retry-After` the server sent, per request and up to 15 times, as client-go does;
//! a request that still ends in 429 holds every request of this client for its `Retry-After`
//! (capped), so a server that keeps throttling sees the load drop instead of a retry storm.
//!
//! The waiting happens in `poll_ready`: kube's client drives its service stack from one buffer
//! worker, so every request of the client queues behind the bucket in order, as with client-go's
//! shared rate limiter. The bucket runs on tokio's clock (testable with paused time), which is
//! why it is a few lines here rather than a rate-limiting crate with its own clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// The limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limits {
    /// Sustained requests per second; 0 or less means unlimited.
    pub qps: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Requests other than watches sent at once; 0 means unbounded. Further requests wait, in
    /// order, for one to be answered.
    pub max_in_flight: usize,
}

/// The bound on requests in flight a replica uses.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// The longest a request waits for a token of the rate limit.
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    not_before: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    state: Mutex<State>,
    in_flight: Option<Arc<Semaphore>>,
}

impl Shared {
    /// Takes a token now, or says how long to wait for one (or for a Retry-After to pass).
    fn admit(&self, now: Instant) -> Option<Instant> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = s.not_before {
            if now < t {
                return Some(t);
            }
            s.not_before = None;
        }
        if self.limits.qps <= 0.0 {
            return None;
        }
        let burst = f64::from(self.limits.burst.max(1));
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.limits.qps).min(burst);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            None
        } else {
            // A tiny rate waits long; never longer than an hour, and never past what an
            // Instant can hold.
            let wait = Duration::try_from_secs_f64((1.0 - s.tokens) / self.limits.qps)
                .map_or(MAX_WAIT, |w| w.min(MAX_WAIT));
            Some(now.checked_add(wait).unwrap_or(now))
        }
    }

    fn back_off(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.not_before = Some(s.not_before.map_or(until, |t| t.max(until)));
    }
}

/// The layer.
#[derive(Clone, Debug)]
pub(crate) struct LimitsLayer {
    shared: Arc<Shared>,
}

impl LimitsLayer {
    pub(crate) fn new(limits: Limits) -> Self {
        let burst = f64::from(limits.burst.max(1));
        Self {
            shared: Arc::new(Shared {
                limits,
                state: Mutex::new(State {
                    tokens: burst,
                    refilled: Instant::now(),
                    not_before: None,
                }),
                in_flight: (limits.max_in_flight > 0)
                    .then(|| Arc::new(Semaphore::new(limits.max_in_flight))),
            }),
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            shared: Arc::clone(&self.shared),
            sleep: None,
            admitted: false,
        }
    }
}

/// The service.
pub(crate) struct Limited<S> {
    inner: S,
    shared: Arc<Shared>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A token was taken for the request about to be called.
    admitted: bool,
}

/// The `Retry-After` of a throttled answer (seconds; 1 when absent or unreadable, as client-go).
fn retry_after<B>(response: &Response<B>) -> Duration {
    let seconds = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.max(1))
}

impl<S, B, ResBody> tower::Service<Request<B>> for Limited<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.admitted {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.shared.admit(Instant::now()) {
                None => self.admitted = true,
                Some(until) => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.admitted = false;
        let shared = Arc::clone(&self.shared);
        let bounded = crate::api_requests::verb(request.method(), request.uri()) != "watch";
        // The inner future sends nothing until polled, so the request waits here for its turn.
        let response = self.inner.call(request);
        Box::pin(async move {
            let _permit = match shared.in_flight.as_ref().filter(|_| bounded) {
                Some(slots) => Arc::clone(slots).acquire_owned().await.ok(),
                None => None,
            };
            let response = response.await?;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(&response).min(shared.limits.max_retry_after);
                debug!(
                    retry_after_ms = wait.as_millis(),
                    "throttled by the API server; holding requests"
                );
                shared.back_off(Instant::now() + wait);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Service as _, ServiceExt as _};

    /// A backend that answers 429 (Retry-After 3) to requests whose URI is `/throttle`, and
    /// records when each request reached it.
    fn backend(
        seen: Arc<Mutex<Vec<Instant>>>,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<()>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<()>, Infallible>> + Send + 'static,
    > + Clone {
        tower::service_fn(move |req: Request<()>| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Instant::now());
            let throttled = req.uri().path() == "/throttle";
            async move {
                let mut response = Response::new(());
                if throttled {
                    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("3"));
                }
                Ok(response)
            }
        })
    }

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap_or_default()
    }

    #[test]
    fn a_tiny_rate_waits_at_most_an_hour_instead_of_overflowing() {
        let layer = LimitsLayer::new(Limits {
            qps: 1e-30,
            burst: 1,
            max_retry_after: Duration::from_secs(10),
            max_in_flight: 0,
        });
        let now = Instant::now();
        assert_eq!(layer.shared.admit(now), None, "the burst goes at once");
        assert_eq!(layer.shared.admit(now), Some(now + MAX_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_go_out_at_the_sustained_rate() {
        let seen = Arc::default();
        let layer = LimitsLayer::new(Limits {
            qps: 10.0,
            burst: 5,
            max_retry_after: Duration::from_secs(10),
            max_in_flight: 0,
        });
        let mut svc = tower::Layer::layer(&layer, backend(Arc::clone(&seen)));
        let start = Instant::now();
        for _ in 0..25 {
            let _ = svc.ready().await.map(|s| s.call(request("/")));
        }
        let times: Vec<Duration> = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|t| t.duration_since(start))
            .collect();
        assert_eq!(times.len(), 25);
        // The burst at once, then one every 100 ms: the 25th after 2 s.
        assert!(times[..5].iter().all(|t| *t == Duration::ZERO));
        assert!(times[5] >= Duration::from_millis(99));
        let last = times[24].as_secs_f64();
        assert!((1.99..2.02).contains(&last), "{last}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_answer_holds_every_request_for_its_retry_after() {
        let seen = Arc::default();
        let layer = LimitsLayer::new(Limits {
            qps: 0.0,
            burst: 1,
            max_retry_after: Duration::from_secs(10),
            max_in_flight: 0,
        });
        let mut svc = tower::Layer::layer(&layer, backend(Arc::clone(&seen)));
        let start = Instant::now();
        let Ok(first) = svc.ready().await.map(|s| s.call(request("/throttle")));
        let Ok(response) = first.await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        // Every following request waits out the Retry-After of 3 s.
        for _ in 0..3 {
            let _ = svc.ready().await.map(|s| s.call(request("/")));
        }
        let times = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(times.len(), 4);
        assert!(times[1].duration_since(start) >= Duration::from_secs(3));
        // Unlimited otherwise: the rest go out at once.
        assert_eq!(times[3], times[1]);

        // A Retry-After above the cap is cut to it.
        let capped = LimitsLayer::new(Limits {
            qps: 0.0,
            burst: 1,
            max_retry_after: Duration::from_secs(1),
            max_in_flight: 0,
        });
        let seen2: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let mut svc = tower::Layer::layer(&capped, backend(Arc::clone(&seen2)));
        let t0 = Instant::now();
        let Ok(f) = svc.ready().await.map(|s| s.call(request("/throttle")));
        let _ = f.await;
        let _ = svc.ready().await.map(|s| s.call(request("/")));
        let times = seen2.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(times[1].duration_since(t0), Duration::from_secs(1));
    }
}

#[cfg(test)]
mod in_flight {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Service as _, ServiceExt as _};

    /// Requests take 100 ms at the backend, which records how many it held at once.
    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_bound_wait_but_watches_do_not() {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (n, m) = (Arc::clone(&now), Arc::clone(&most));
        let backend = tower::service_fn(move |_: Request<()>| {
            let (n, m) = (Arc::clone(&n), Arc::clone(&m));
            async move {
                let held = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(held, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(()))
            }
        });
        let layer = LimitsLayer::new(Limits {
            qps: 0.0,
            burst: 1,
            max_retry_after: Duration::from_secs(10),
            max_in_flight: 4,
        });
        let mut svc = tower::Layer::layer(&layer, backend);
        let started = Instant::now();
        let mut calls = Vec::new();
        for i in 0..12 {
            let uri = format!("/api/v1/namespaces/default/configmaps/c{i}");
            let Ok(ready) = svc.ready().await;
            calls.push(tokio::spawn(
                ready.call(Request::patch(uri).body(()).unwrap_or_default()),
            ));
        }
        // Five watches on top of four requests in flight: none of them waits.
        for _ in 0..5 {
            let Ok(ready) = svc.ready().await;
            calls.push(tokio::spawn(
                ready.call(
                    Request::get("/api/v1/configmaps?watch=true")
                        .body(())
                        .unwrap_or_default(),
                ),
            ));
        }
        for call in calls {
            assert!(matches!(call.await, Ok(Ok(_))));
        }
        assert_eq!(most.load(Ordering::SeqCst), 4 + 5);
        // 12 bounded requests, 4 at a time, 100 ms each.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }
}

#[cfg(test)]
mod with_kube {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use ringscale_kube_sim::{Config, ErrorRule, InjectedError, KubeSim};

    /// Through kube's whole client stack against kube-sim throttling every `get`: kube retries
    /// the request only after each Retry-After (1 s), never sooner.
    #[tokio::test]
    async fn a_throttled_kube_client_waits_out_retry_after() {
        ringscale_scalers::install_crypto_provider();
        let Ok(sim) = KubeSim::start(Config {
            controllers: false,
            ..Config::default()
        })
        .await
        else {
            panic!("kube-sim did not start");
        };
        let Ok(kubeconfig) = kube::config::Kubeconfig::from_yaml(sim.kubeconfig()) else {
            panic!("bad kubeconfig");
        };
        let Ok(config) =
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
        else {
            panic!("bad config");
        };
        let limits = Limits {
            qps: 0.0,
            burst: 1,
            max_retry_after: Duration::from_secs(10),
            max_in_flight: MAX_IN_FLIGHT,
        };
        let Ok(client) = crate::api_requests::client(config, Default::default(), limits) else {
            panic!("no client");
        };
        sim.sim().faults.add_error(ErrorRule {
            except_resources: Vec::new(),
            verbs: vec!["get".into()],
            rate: 1.0,
            error: InjectedError::Throttle {
                retry_after_seconds: 1,
            },
        });
        let api = Api::<ConfigMap>::namespaced(client, "default");
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(3), api.get_opt("x")).await;
        let log = sim.sim().stats.log();
        let gets: Vec<Duration> = log
            .iter()
            .filter(|r| r.verb == "get")
            .map(|r| r.at.duration_since(started))
            .collect();
        eprintln!("first: {first:?}; gets at {gets:?}");
        assert!(gets.len() >= 2, "{gets:?}");
        for pair in gets.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(950), "{gets:?}");
        }
    }
}
