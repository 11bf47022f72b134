//! `etcd` against etcd servers started by the tests (Debian's `etcd-server`). Keys are written
//! through etcd's own JSON gateway (`/v3/kv/put`, `/v3/auth/...`), not through the code under
//! test.

use ringscale_scalers::{ErrorKind, MetricSpec, Sources};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::*;

struct Etcd {
    addr: String,
    _proc: Proc,
    _dir: TempDir,
    client: u16,
    peer: u16,
}

impl Etcd {
    /// Stops the server and starts it again on the same ports and data.
    async fn restart(self) -> Etcd {
        let Etcd {
            _proc: process,
            _dir: dir,
            client,
            peer,
            ..
        } = self;
        drop(process);
        // The old process must have let go of its ports.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        run(dir, client, peer).await
    }
}

async fn start() -> Option<Etcd> {
    if !program(
        "etcd",
        "etcd server (Debian etcd-server) for the etcd tests",
    ) {
        return None;
    }
    let dir = TempDir::new("etcd");
    let (client, peer) = (free_port(), free_port());
    Some(run(dir, client, peer).await)
}

/// etcd on `client` and `peer` with its data in `dir` (kept across a restart).
async fn run(dir: TempDir, client: u16, peer: u16) -> Etcd {
    let addr = format!("127.0.0.1:{client}");
    let client_url = format!("http://{addr}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.0.join("data").display().to_string();
    let proc = Proc::spawn(
        "etcd",
        &[
            "--name",
            "ringscale-test",
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("ringscale-test={peer_url}"),
            "--log-level",
            "error",
        ],
    );
    eventually(20, || {
        let addr = addr.clone();
        async move {
            match gateway(&addr, "/v3/kv/range", &json!({"key": b64("probe")}), None).await {
                Ok(_) => Ok(()),
                // Serving, but with authentication on (after a restart).
                Err(e) if e.contains("user name is empty") => Ok(()),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    Etcd {
        addr,
        _proc: proc,
        _dir: dir,
        client,
        peer,
    }
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A POST to etcd's JSON gateway; the JSON answer, or why not.
async fn gateway(
    addr: &str,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> Result<Value, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {head} {body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{path}: {e}: {body}"))
}

async fn put(addr: &str, key: &str, value: &str, token: Option<&str>) {
    gateway(
        addr,
        "/v3/kv/put",
        &json!({"key": b64(key), "value": b64(value)}),
        token,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_keys_value_is_the_metric_and_activity_follows_it() {
    let Some(etcd) = start().await else { return };
    let sources = Sources::default();
    let scaler = build(
        &input(
            "etcd",
            &[
                ("endpoints", &etcd.addr),
                ("watchKey", "/jobs/pending"),
                ("value", "5"),
                ("activationValue", "2"),
            ],
        ),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!()
    };
    assert_eq!(
        (m.name.as_str(), m.target_quantity().as_str()),
        ("s0-etcd--jobs-pending", "5")
    );
    // KEDA: a key that does not exist is an error.
    let err = poll(&scaler).await.unwrap_err();
    assert!(err.to_string().contains("doesn't exist"), "{err}");
    put(&etcd.addr, "/jobs/pending", "2", None).await;
    assert_eq!(value(&scaler).await, (2.0, false), "not above 2: inactive");
    put(&etcd.addr, "/jobs/pending", "12.5", None).await;
    assert_eq!(value(&scaler).await, (12.5, true));
    put(&etcd.addr, "/jobs/pending", "many", None).await;
    let err = poll(&scaler).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source);
    assert!(err.to_string().contains("not a number"), "{err}");
    gateway(
        &etcd.addr,
        "/v3/kv/deleterange",
        &json!({"key": b64("/jobs/pending")}),
        None,
    )
    .await
    .unwrap();
    assert!(poll(&scaler).await.is_err());

    // An endpoint that cannot be reached is passed over for the next one; the triggers of one
    // cluster share one source.
    put(&etcd.addr, "/jobs/pending", "7", None).await;
    let endpoints = format!("{},http://{}", refused_address(), etcd.addr);
    let failover = build(
        &input(
            "etcd",
            &[
                ("endpoints", &endpoints),
                ("watchKey", "/jobs/pending"),
                ("value", "5"),
            ],
        ),
        &sources,
    );
    assert_eq!(value(&failover).await, (7.0, true));
    let again = build(
        &input(
            "etcd",
            &[
                ("endpoints", &endpoints),
                ("watchKey", "/other"),
                ("value", "1"),
            ],
        ),
        &sources,
    );
    assert_eq!(sources.counts().etcd, 2, "one source per endpoint list");
    drop(again);

    // Every endpoint down: a transient source error naming them.
    let down = build(
        &input(
            "etcd",
            &[
                ("endpoints", &refused_address()),
                ("watchKey", "/jobs/pending"),
                ("value", "5"),
            ],
        ),
        &sources,
    );
    assert_down(
        &down,
        ErrorKind::Source,
        "no etcd endpoint could be reached",
    )
    .await;
}

/// The next pushed activity that is `want`, skipping others (bounded).
async fn pushed(
    rx: &mut tokio::sync::mpsc::Receiver<Result<bool, ringscale_scalers::ScalerError>>,
    want: bool,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(active))) if active == want => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch stream ended"),
            Err(_) => panic!("no push of activity {want} within 15 s"),
        }
    }
}

/// Puts `value` every 200 ms until the watch pushes `want` (the watch may not be open yet, or
/// be opening again after a restart; bounded).
async fn put_until_pushed(
    addr: &str,
    rx: &mut tokio::sync::mpsc::Receiver<Result<bool, ringscale_scalers::ScalerError>>,
    value: &str,
    want: bool,
) {
    for _ in 0..150 {
        put(addr, "/queue/depth", value, None).await;
        match tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await {
            Ok(Some(Ok(active))) if active == want => return,
            Ok(None) => panic!("the watch stream ended"),
            _ => {}
        }
    }
    panic!("the watch never pushed {want} for {value}");
}

#[tokio::test]
async fn the_watch_pushes_activity_between_polls_and_survives_a_restart() {
    let Some(etcd) = start().await else { return };
    let sources = Sources::default();
    let scaler = build(
        &input(
            "etcd",
            &[
                ("endpoints", &etcd.addr),
                ("watchKey", "/queue/depth"),
                ("value", "5"),
                ("activationValue", "3"),
            ],
        ),
        &sources,
    );
    assert!(scaler.is_push());
    let mut rx = scaler
        .push_activity()
        .expect("etcd triggers watch their key");
    put_until_pushed(&etcd.addr, &mut rx, "5", true).await;
    put(&etcd.addr, "/queue/depth", "1", None).await;
    pushed(&mut rx, false).await;
    put(&etcd.addr, "/queue/depth", "9", None).await;
    pushed(&mut rx, true).await;
    // KEDA: a value that is not a number counts as 0, and so does a deleted key.
    put(&etcd.addr, "/queue/depth", "many", None).await;
    pushed(&mut rx, false).await;
    put(&etcd.addr, "/queue/depth", "9", None).await;
    pushed(&mut rx, true).await;
    gateway(
        &etcd.addr,
        "/v3/kv/deleterange",
        &json!({"key": b64("/queue/depth")}),
        None,
    )
    .await
    .unwrap();
    pushed(&mut rx, false).await;

    // etcd restarts: the stream reports the failure, then watches again by itself.
    let etcd = etcd.restart().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Err(e))) => {
                assert_eq!(e.kind, ErrorKind::Source, "{e}");
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("expected the watch to report the restart, got {other:?}"),
        }
    }
    put_until_pushed(&etcd.addr, &mut rx, "8", true).await;
}

#[tokio::test]
async fn tls_with_a_client_certificate_and_the_servers_ca() {
    use ringscale_kube_sim::tls::Authority;
    if !program(
        "etcd",
        "etcd server (Debian etcd-server) for the etcd tests",
    ) {
        return;
    }
    // etcd serves TLS (client certificates required) on one port and plain HTTP on another,
    // through which the test writes the key.
    let ca = Authority::new("etcd-test-ca").unwrap();
    let server = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let client = ca.issue_client("scaler", &[]).unwrap();
    let dir = TempDir::new("etcd-tls");
    let file = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, trusted) = (
        file("server.pem", &server.cert_pem),
        file("server-key.pem", &server.key_pem),
        file("ca.pem", &ca.cert_pem),
    );
    let (tls_port, plain_port, peer) = (free_port(), free_port(), free_port());
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let plain_addr = format!("127.0.0.1:{plain_port}");
    let listen = format!("https://{tls_addr},http://{plain_addr}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.0.join("data").display().to_string();
    let _proc = Proc::spawn(
        "etcd",
        &[
            "--name",
            "ringscale-tls",
            "--data-dir",
            &data,
            "--listen-client-urls",
            &listen,
            "--advertise-client-urls",
            &format!("https://{tls_addr}"),
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("ringscale-tls={peer_url}"),
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &trusted,
            "--client-cert-auth",
            "--log-level",
            "error",
        ],
    );
    eventually(20, || {
        let addr = plain_addr.clone();
        async move {
            gateway(&addr, "/v3/kv/range", &json!({"key": b64("probe")}), None)
                .await
                .map(|_| ())
        }
    })
    .await;
    put(&plain_addr, "/tls/depth", "4", None).await;

    let sources = Sources::default();
    let trigger = |auth: &[(&str, &str)]| {
        let mut i = input(
            "etcd",
            &[
                ("endpoints", tls_addr.as_str()),
                ("watchKey", "/tls/depth"),
                ("value", "2"),
            ],
        );
        i.auth_params = auth
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        i
    };
    let full = [
        ("tls", "enable"),
        ("ca", ca.cert_pem.as_str()),
        ("cert", client.cert_pem.as_str()),
        ("key", client.key_pem.as_str()),
    ];
    // The first read may come while the TLS listener is still starting on a loaded machine.
    let with_tls = build(&trigger(&full), &sources);
    eventually(20, || async {
        poll(&with_tls).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(value(&with_tls).await, (4.0, true));
    // Without a client certificate etcd refuses the handshake, and the error says so.
    let err = poll(&build(&trigger(&full[..2]), &sources))
        .await
        .unwrap_err();
    assert!(err.kind.is_transient(), "{err}");
    // (TLS 1.3: the refusal reaches the client as an alert or as a closed connection.)
    assert!(
        ["BadCertificate", "connection closed", "broken pipe"]
            .iter()
            .any(|t| err.to_string().contains(t)),
        "{err}"
    );
    // Without the CA the server's certificate is not trusted.
    let no_ca = [full[0], full[2], full[3]];
    let err = poll(&build(&trigger(&no_ca), &sources)).await.unwrap_err();
    assert!(err.kind.is_transient(), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Plain text against the TLS port fails too.
    let err = poll(&build(&trigger(&[]), &sources)).await.unwrap_err();
    assert!(err.kind.is_transient(), "{err}");
}

#[tokio::test]
async fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let Some(etcd) = start().await else { return };
    let a = &etcd.addr;
    gateway(
        a,
        "/v3/auth/user/add",
        &json!({"name": "root", "password": "rootpw"}),
        None,
    )
    .await
    .unwrap();
    gateway(a, "/v3/auth/role/add", &json!({"name": "root"}), None)
        .await
        .unwrap();
    gateway(
        a,
        "/v3/auth/user/grant",
        &json!({"user": "root", "role": "root"}),
        None,
    )
    .await
    .unwrap();
    gateway(a, "/v3/auth/enable", &json!({}), None)
        .await
        .unwrap();
    let token = gateway(
        a,
        "/v3/auth/authenticate",
        &json!({"name": "root", "password": "rootpw"}),
        None,
    )
    .await
    .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    put(a, "/queue", "4", Some(&token)).await;

    let sources = Sources::default();
    let mut with_auth = input(
        "etcd",
        &[
            ("endpoints", a.as_str()),
            ("watchKey", "/queue"),
            ("value", "2"),
        ],
    );
    with_auth
        .auth_params
        .insert("username".into(), "root".into());
    with_auth
        .auth_params
        .insert("password".into(), "rootpw".into());
    let scaler = build(&with_auth, &sources);
    assert_eq!(value(&scaler).await, (4.0, true));
    put(a, "/queue", "0", Some(&token)).await;
    assert_eq!(value(&scaler).await, (0.0, false), "the token is reused");

    // Without credentials etcd refuses the read; with a wrong password it refuses the login.
    let anonymous = build(
        &input(
            "etcd",
            &[
                ("endpoints", a.as_str()),
                ("watchKey", "/queue"),
                ("value", "2"),
            ],
        ),
        &sources,
    );
    let err = poll(&anonymous).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let mut wrong = with_auth.clone();
    wrong.auth_params.insert("password".into(), "nope".into());
    let err = poll(&build(&wrong, &sources)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the password is not shown: {err}"
    );

    // A restarted etcd no longer knows the token the trigger holds: it logs in again.
    let etcd = etcd.restart().await;
    let token = eventually(20, || async {
        let answer = gateway(
            &etcd.addr,
            "/v3/auth/authenticate",
            &json!({"name": "root", "password": "rootpw"}),
            None,
        )
        .await?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {answer}"))
    })
    .await;
    put(&etcd.addr, "/queue", "9", Some(&token)).await;
    let polled = eventually(20, || async {
        poll(&scaler).await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!((polled.values[0].value, polled.active), (9.0, true));
}

#[test]
fn etcd_parameters_are_checked_as_keda_checks_them() {
    let errors = problems(&input("etcd", &[]));
    assert_problem(&errors, "endpoints", "missing required parameter");
    assert_problem(&errors, "watchKey", "missing required parameter");
    assert_problem(&errors, "value", "missing required parameter");
    let errors = problems(&input(
        "etcd",
        &[
            ("endpoints", "ftp://etcd:2379"),
            ("watchKey", "k"),
            ("value", "x"),
            ("watchProgressNotifyInterval", "0"),
        ],
    ));
    assert_problem(&errors, "endpoints", "is not an etcd endpoint");
    assert_problem(&errors, "value", "is not a number");
    assert_problem(&errors, "watchProgressNotifyInterval", "greater than 0");
    let mut half = input(
        "etcd",
        &[
            ("endpoints", "etcd:2379"),
            ("watchKey", "k"),
            ("value", "1"),
        ],
    );
    half.auth_params.insert("password".into(), "p".into());
    half.auth_params.insert("tls".into(), "maybe".into());
    let errors = problems(&half);
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("username must be provided with password")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("must be one of enable, disable")),
        "{text:?}"
    );
}
