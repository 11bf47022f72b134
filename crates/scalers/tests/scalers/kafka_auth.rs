//! `kafka` with SASL and TLS. noida-db and Tansu speak neither as the trigger needs, so a front
//! written here does the part a broker does for them — it terminates TLS and answers the SASL
//! handshake (PLAIN, or the server side of SCRAM-SHA-256/512) — and relays every other frame to
//! a real noida-db behind it, rewriting the broker addresses in Metadata and FindCoordinator
//! answers to its own so that every connection comes through it. Frames other than ApiVersions
//! before authentication close the connection, as Kafka does.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{FindCoordinatorResponse, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use ring::{digest, hmac, pbkdf2};
use ringscale_kube_sim::tls::{Authority, server_config};
use ringscale_scalers::{ErrorKind, Sources, TriggerInput};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::kafka::{Broker, noida};
use crate::kafka_client::Client;

const SALT: &[u8] = b"ringscale-test-salt";
const ITERATIONS: u32 = 4096;

/// What the front accepts.
#[derive(Clone)]
struct Accept {
    mechanisms: Vec<&'static str>,
    user: &'static str,
    password: &'static str,
}

struct Front {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front(upstream: &str, tls: Option<tokio_rustls::TlsAcceptor>, accept: Accept) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap();
    let addr = own.to_string();
    let upstream = upstream.to_owned();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (upstream, accept, tls) = (upstream.clone(), accept.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(tcp, &upstream, own.port(), &accept).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(stream, &upstream, own.port(), &accept).await;
                        }
                    }
                }
            });
        }
    });
    Front { addr, task }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, frame: &[u8]) -> Option<()> {
    s.write_all(&(frame.len() as i32).to_be_bytes())
        .await
        .ok()?;
    s.write_all(frame).await.ok()
}

/// The body of a request after its v1 header (api key, version, correlation id, client id).
fn body(frame: &[u8]) -> &[u8] {
    let client_id = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
    &frame[10 + client_id..]
}

fn kafka_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

struct Scram {
    client_first_bare: String,
    server_first: String,
}

/// A response of type `R` with its broker addresses pointed at the front.
fn rewrite<R: Decodable + Encodable + HeaderVersion>(
    answer: &[u8],
    version: i16,
    edit: impl FnOnce(&mut R),
) -> Vec<u8> {
    let mut buf = Bytes::copy_from_slice(answer);
    let header = ResponseHeader::decode(&mut buf, R::header_version(version)).unwrap();
    let mut response = R::decode(&mut buf, version).unwrap();
    edit(&mut response);
    let mut out = BytesMut::new();
    header.encode(&mut out, R::header_version(version)).unwrap();
    response.encode(&mut out, version).unwrap();
    out.to_vec()
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    upstream: &str,
    own_port: u16,
    accept: &Accept,
) {
    let mut up: Option<TcpStream> = None;
    let mut mechanism: Option<String> = None;
    let mut scram: Option<Scram> = None;
    let mut authenticated = false;
    while let Some(frame) = read_frame(&mut client).await {
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation = &frame[4..8];
        let mut reply = correlation.to_vec();
        match key {
            // SaslHandshake
            17 => {
                let b = body(&frame);
                let len = i16::from_be_bytes([b[0], b[1]]) as usize;
                let wanted = String::from_utf8_lossy(&b[2..2 + len]).into_owned();
                let ok = accept.mechanisms.contains(&wanted.as_str());
                reply.extend_from_slice(&(if ok { 0i16 } else { 33 }).to_be_bytes());
                reply.extend_from_slice(&(accept.mechanisms.len() as i32).to_be_bytes());
                for m in &accept.mechanisms {
                    reply.extend_from_slice(&kafka_string(m));
                }
                mechanism = ok.then_some(wanted);
            }
            // SaslAuthenticate
            36 => {
                let b = body(&frame);
                let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let bytes = &b[4..4 + len];
                let answer = authenticate(mechanism.as_deref(), bytes, accept, &mut scram);
                match &answer {
                    Ok((_, done)) => authenticated = *done,
                    Err(_) => authenticated = false,
                }
                let (code, message, out) = match answer {
                    Ok((out, _)) => (0i16, None, out),
                    Err(m) => (58, Some(m), Vec::new()),
                };
                reply.extend_from_slice(&code.to_be_bytes());
                match message {
                    Some(m) => reply.extend_from_slice(&kafka_string(&m)),
                    None => reply.extend_from_slice(&(-1i16).to_be_bytes()),
                }
                reply.extend_from_slice(&(out.len() as i32).to_be_bytes());
                reply.extend_from_slice(&out);
                if version >= 1 {
                    reply.extend_from_slice(&0i64.to_be_bytes());
                }
                if code != 0 {
                    let _ = write_frame(&mut client, &reply).await;
                    return;
                }
            }
            // Anything else: ApiVersions at any time, the rest only once authenticated.
            _ => {
                if key != 18 && !authenticated {
                    return;
                }
                if up.is_none() {
                    up = TcpStream::connect(upstream).await.ok();
                }
                let Some(u) = up.as_mut() else { return };
                if write_frame(u, &frame).await.is_none() {
                    return;
                }
                let Some(answer) = read_frame(u).await else {
                    return;
                };
                let host = StrBytes::from_static_str("127.0.0.1");
                let port = i32::from(own_port);
                reply = match key {
                    3 => rewrite::<MetadataResponse>(&answer, version, |r| {
                        for b in &mut r.brokers {
                            (b.host, b.port) = (host.clone(), port);
                        }
                    }),
                    10 => rewrite::<FindCoordinatorResponse>(&answer, version, |r| {
                        (r.host, r.port) = (host.clone(), port);
                    }),
                    _ => answer,
                };
            }
        }
        if write_frame(&mut client, &reply).await.is_none() {
            return;
        }
    }
}

/// One SASL step: the bytes to send back and whether the client is now authenticated.
fn authenticate(
    mechanism: Option<&str>,
    bytes: &[u8],
    accept: &Accept,
    scram: &mut Option<Scram>,
) -> Result<(Vec<u8>, bool), String> {
    let refused = || "Authentication failed: Invalid username or password".to_owned();
    match mechanism {
        Some("PLAIN") => {
            let parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
            if parts.len() == 3
                && parts[1] == accept.user.as_bytes()
                && parts[2] == accept.password.as_bytes()
            {
                Ok((Vec::new(), true))
            } else {
                Err(refused())
            }
        }
        Some(m @ ("SCRAM-SHA-256" | "SCRAM-SHA-512")) => {
            let sha512 = m == "SCRAM-SHA-512";
            let text = String::from_utf8_lossy(bytes).into_owned();
            match scram.take() {
                None => {
                    let bare = text.strip_prefix("n,,").ok_or_else(refused)?.to_owned();
                    let user = bare
                        .split(',')
                        .find_map(|a| a.strip_prefix("n="))
                        .ok_or_else(refused)?;
                    if user != accept.user {
                        return Err(refused());
                    }
                    let nonce = bare
                        .split(',')
                        .find_map(|a| a.strip_prefix("r="))
                        .ok_or_else(refused)?;
                    let server_first =
                        format!("r={nonce}srvnonce,s={},i={ITERATIONS}", B64.encode(SALT));
                    *scram = Some(Scram {
                        client_first_bare: bare,
                        server_first: server_first.clone(),
                    });
                    Ok((server_first.into_bytes(), false))
                }
                Some(state) => {
                    let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(refused)?;
                    let proof = B64.decode(proof).map_err(|_| refused())?;
                    let auth_message = format!(
                        "{},{},{without_proof}",
                        state.client_first_bare, state.server_first
                    );
                    let (alg, mac, dig, len) = if sha512 {
                        (
                            pbkdf2::PBKDF2_HMAC_SHA512,
                            hmac::HMAC_SHA512,
                            &digest::SHA512,
                            64,
                        )
                    } else {
                        (
                            pbkdf2::PBKDF2_HMAC_SHA256,
                            hmac::HMAC_SHA256,
                            &digest::SHA256,
                            32,
                        )
                    };
                    let mut salted = vec![0u8; len];
                    pbkdf2::derive(
                        alg,
                        std::num::NonZeroU32::new(ITERATIONS).unwrap(),
                        SALT,
                        accept.password.as_bytes(),
                        &mut salted,
                    );
                    let salted = hmac::Key::new(mac, &salted);
                    let stored = digest::digest(dig, hmac::sign(&salted, b"Client Key").as_ref());
                    let signature = hmac::sign(
                        &hmac::Key::new(mac, stored.as_ref()),
                        auth_message.as_bytes(),
                    );
                    let client_key: Vec<u8> = proof
                        .iter()
                        .zip(signature.as_ref())
                        .map(|(a, b)| a ^ b)
                        .collect();
                    if proof.len() != len
                        || digest::digest(dig, &client_key).as_ref() != stored.as_ref()
                    {
                        return Err(refused());
                    }
                    let server_key = hmac::sign(&salted, b"Server Key");
                    let server_signature = hmac::sign(
                        &hmac::Key::new(mac, server_key.as_ref()),
                        auth_message.as_bytes(),
                    );
                    Ok((
                        format!("v={}", B64.encode(server_signature.as_ref())).into_bytes(),
                        true,
                    ))
                }
            }
        }
        _ => Err("no mechanism agreed".to_owned()),
    }
}

/// A noida-db broker with `topic` (2 partitions): group `group` committed at 0, 3 and 4 records
/// produced: lag 7.
async fn broker_with_lag(topic: &str, group: &str) -> Option<Broker> {
    let broker = noida().await?;
    let mut c = Client::connect(&broker.addr).await.unwrap();
    c.create_topic(topic, 2).await.unwrap();
    c.commit(group, topic, &[(0, 0), (1, 0)]).await;
    c.produce(topic, 0, 3).await;
    c.produce(topic, 1, 4).await;
    Some(broker)
}

fn trigger(
    addr: &str,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> TriggerInput {
    let mut m = vec![
        ("bootstrapServers", addr),
        ("consumerGroup", group),
        ("topic", topic),
        ("allowIdleConsumers", "true"),
    ];
    m.extend_from_slice(extra);
    let mut i = input("kafka", &m);
    i.auth_params = auth
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    i
}

#[tokio::test]
async fn sasl_scram_and_plain_authenticate_and_wrong_passwords_are_refused() {
    let (topic, group) = (unique("sasl"), unique("group"));
    let Some(broker) = broker_with_lag(&topic, &group).await else {
        return;
    };
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let sasl = match mechanism {
            "SCRAM-SHA-256" => "scram_sha256",
            "SCRAM-SHA-512" => "scram_sha512",
            _ => "plaintext",
        };
        let front = front(
            &broker.addr,
            None,
            Accept {
                mechanisms: vec![mechanism],
                user: "alice",
                password: "correct horse",
            },
        )
        .await;
        let sources = Sources::default();
        let good = build(
            &trigger(
                &front.addr,
                &topic,
                &group,
                &[("sasl", sasl)],
                &[("username", "alice"), ("password", "correct horse")],
            ),
            &sources,
        );
        assert_eq!(value(&good).await, (7.0, true), "{mechanism}");

        let bad = build(
            &trigger(
                &front.addr,
                &topic,
                &group,
                &[("sasl", sasl)],
                &[("username", "alice"), ("password", "battery staple")],
            ),
            &sources,
        );
        let err = poll(&bad).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{mechanism}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("authentication failed"),
            "{mechanism}: {text}"
        );
        assert!(!text.contains("battery staple"), "{mechanism}: {text}");
    }

    // A mechanism the broker does not offer: the error says which it offers.
    let front = front(
        &broker.addr,
        None,
        Accept {
            mechanisms: vec!["SCRAM-SHA-512"],
            user: "alice",
            password: "pw",
        },
    )
    .await;
    let plain = build(
        &trigger(
            &front.addr,
            &topic,
            &group,
            &[("sasl", "scram_sha256")],
            &[("username", "alice"), ("password", "pw")],
        ),
        &Sources::default(),
    );
    let err = poll(&plain).await.unwrap_err().to_string();
    assert!(
        err.contains("SCRAM-SHA-256") && err.contains("offers SCRAM-SHA-512"),
        "{err}"
    );

    // Without SASL the front closes the connection at the first request after ApiVersions.
    let anonymous = build(
        &trigger(&front.addr, &topic, &group, &[], &[]),
        &Sources::default(),
    );
    assert!(poll(&anonymous).await.is_err());
}

#[tokio::test]
async fn tls_with_the_cluster_ca_and_sasl_on_top() {
    ringscale_scalers::install_crypto_provider();
    let (topic, group) = (unique("tls"), unique("group"));
    let Some(broker) = broker_with_lag(&topic, &group).await else {
        return;
    };
    let ca = Authority::new("kafka-test-ca").unwrap();
    let server = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&server, &ca).unwrap()));
    let front = front(
        &broker.addr,
        Some(acceptor),
        Accept {
            mechanisms: vec!["SCRAM-SHA-512"],
            user: "bob",
            password: "tls-pw",
        },
    )
    .await;
    let sources = Sources::default();
    let auth = [
        ("tls", "enable"),
        ("ca", ca.cert_pem.as_str()),
        ("username", "bob"),
        ("password", "tls-pw"),
    ];
    let scaler = build(
        &trigger(
            &front.addr,
            &topic,
            &group,
            &[("sasl", "scram_sha512")],
            &auth,
        ),
        &sources,
    );
    assert_eq!(value(&scaler).await, (7.0, true));

    // Without the CA the certificate is not trusted; unsafeSsl skips the check, as in KEDA.
    let untrusted = build(
        &trigger(
            &front.addr,
            &topic,
            &group,
            &[("sasl", "scram_sha512"), ("tls", "enable")],
            &[("username", "bob"), ("password", "tls-pw")],
        ),
        &sources,
    );
    let err = poll(&untrusted).await.unwrap_err().to_string();
    assert!(
        err.contains("TLS handshake") && err.contains("certificate"),
        "{err}"
    );
    let unsafe_ssl = build(
        &trigger(
            &front.addr,
            &topic,
            &group,
            &[
                ("sasl", "scram_sha512"),
                ("tls", "enable"),
                ("unsafeSsl", "true"),
            ],
            &[("username", "bob"), ("password", "tls-pw")],
        ),
        &sources,
    );
    assert_eq!(value(&unsafe_ssl).await, (7.0, true));
    // Plain TCP against a TLS listener fails instead of hanging.
    let mut plain = trigger(
        &front.addr,
        &topic,
        &group,
        &[("sasl", "scram_sha512")],
        &[("username", "bob"), ("password", "tls-pw")],
    );
    plain.default_timeout = std::time::Duration::from_secs(2);
    assert!(poll(&build(&plain, &sources)).await.is_err());
}
