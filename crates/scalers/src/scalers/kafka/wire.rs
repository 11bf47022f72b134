//! One connection to a Kafka broker: requests framed as the Kafka protocol frames them, written
//! one after another on one TCP (or TLS) stream and answered in order, so every trigger that
//! reads this broker shares the connection without waiting for the others' answers.
//!
//! A connection opens with ApiVersions (which versions of each API the broker speaks) and, with
//! SASL, the handshake and authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) before any other
//! request, as Kafka requires.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::scram::{Mechanism, ScramClient};
use crate::redact::Secret;

/// The largest response accepted; a broker announcing more is treated as broken.
const MAX_FRAME: usize = 64 << 20;

const CLIENT_ID: &str = "ringscale";

/// SASL settings of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The broker could not be reached or the connection broke.
    Io(String),
    /// The broker refused the credentials or the SASL mechanism.
    Auth(String),
    /// The broker answered something this client cannot read, or speaks no version of an API
    /// this client speaks.
    Protocol(String),
    /// No answer within the call's time.
    TimedOut,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Auth(e) => write!(f, "authentication failed: {e}"),
            WireError::Protocol(e) => write!(f, "protocol error: {e}"),
            WireError::TimedOut => write!(f, "the broker did not answer in time"),
        }
    }
}

/// A request this client sends, with its API key and the response it gets. (The crate's own
/// `Request` trait needs its `broker` feature, which would compile every response encoder.)
pub(crate) trait Request: Message + Encodable + HeaderVersion {
    const KEY: i16;
    type Response: Decodable + HeaderVersion;
}

macro_rules! requests {
    ($($req:ty => $resp:ty, $key:ident;)*) => {$(
        impl Request for $req {
            const KEY: i16 = ApiKey::$key as i16;
            type Response = $resp;
        }
    )*};
}

requests! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate;
    MetadataRequest => MetadataResponse, Metadata;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch;
    ListOffsetsRequest => ListOffsetsResponse, ListOffsets;
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Answer = oneshot::Sender<Result<Bytes, WireError>>;

struct Writer {
    half: WriteHalf<Box<dyn Stream>>,
    next_id: i32,
}

/// An open connection to one broker.
pub(crate) struct Conn {
    addr: String,
    writer: tokio::sync::Mutex<Writer>,
    /// Calls written and not yet answered, in the order they were written.
    pending: Arc<Mutex<VecDeque<(i32, Answer)>>>,
    closed: Arc<AtomicBool>,
    reader: tokio::task::AbortHandle,
    /// API key → (min, max) version the broker speaks.
    versions: HashMap<i16, (i16, i16)>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    /// Connects to `addr` (`host:port`), with TLS when `tls` is given, and authenticates.
    pub async fn open(
        addr: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        sasl: Option<&Sasl>,
        timeout: Duration,
    ) -> Result<Conn, WireError> {
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(WireError::Io(format!("cannot connect to {addr}: {e}"))),
            Err(_) => {
                return Err(WireError::Io(format!(
                    "cannot connect to {addr}: no answer within {timeout:?}"
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let host = host_of(addr);
                let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                    WireError::Io(format!("{host:?} is not a TLS server name: {e}"))
                })?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        return Err(WireError::Io(format!("TLS handshake with {addr}: {e}")));
                    }
                    Err(_) => {
                        return Err(WireError::Io(format!(
                            "TLS handshake with {addr}: no answer within {timeout:?}"
                        )));
                    }
                }
            }
        };
        let (read, write) = tokio::io::split(stream);
        let pending: Arc<Mutex<VecDeque<(i32, Answer)>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(
            read,
            Arc::clone(&pending),
            Arc::clone(&closed),
            addr.to_owned(),
        ))
        .abort_handle();
        let mut conn = Conn {
            addr: addr.to_owned(),
            writer: tokio::sync::Mutex::new(Writer {
                half: write,
                next_id: 0,
            }),
            pending,
            closed,
            reader,
            versions: HashMap::new(),
        };
        let api = conn
            .call_at(&ApiVersionsRequest::default(), 0, timeout)
            .await?;
        if api.error_code != 0 {
            return Err(WireError::Protocol(format!(
                "ApiVersions answered {}",
                error_name(api.error_code)
            )));
        }
        conn.versions = api
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = sasl {
            conn.authenticate(sasl, timeout).await?;
        }
        Ok(conn)
    }

    /// Whether the connection broke (or was closed after a call ran out of time).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The highest version of `R` both sides speak within `ours` (inclusive).
    pub fn version<R: Request>(&self, ours: (i16, i16)) -> Result<i16, WireError> {
        let lo = ours.0.max(R::VERSIONS.min);
        let hi = ours.1.min(R::VERSIONS.max);
        let Some(&(bmin, bmax)) = self.versions.get(&R::KEY) else {
            return Err(WireError::Protocol(format!(
                "{} does not offer {}",
                self.addr,
                api_name(R::KEY)
            )));
        };
        let v = hi.min(bmax);
        if v < lo || v < bmin {
            return Err(WireError::Protocol(format!(
                "{} speaks {} versions {bmin}..{bmax}, ringscale {lo}..{hi}",
                self.addr,
                api_name(R::KEY)
            )));
        }
        Ok(v)
    }

    /// Sends `req` at the highest version both sides speak within `ours` and waits for the
    /// answer.
    pub async fn call<R: Request>(
        &self,
        req: &R,
        ours: (i16, i16),
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let version = self.version::<R>(ours)?;
        self.call_at(req, version, timeout).await
    }

    /// Sends `req` at `version` and waits for the answer. A call that gets no answer in time
    /// closes the connection: answers come in order, so the ones behind it would wait as well.
    pub async fn call_at<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        if self.is_closed() {
            return Err(WireError::Io(format!("connection to {} closed", self.addr)));
        }
        let (tx, rx) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, self.send(req, version, tx)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.close();
                return Err(e);
            }
            Err(_) => {
                self.close();
                return Err(WireError::TimedOut);
            }
        }
        let mut body = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(b))) => b,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => {
                return Err(WireError::Io(format!("connection to {} closed", self.addr)));
            }
            Err(_) => {
                self.close();
                return Err(WireError::TimedOut);
            }
        };
        // The correlation id was checked by the reader; skip the rest of the header.
        ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(|e| {
            WireError::Protocol(format!("{} response header: {e}", api_name(R::KEY)))
        })?;
        R::Response::decode(&mut body, version)
            .map_err(|e| WireError::Protocol(format!("{} response: {e}", api_name(R::KEY))))
    }

    async fn send<R: Request>(&self, req: &R, version: i16, tx: Answer) -> Result<(), WireError> {
        let mut w = self.writer.lock().await;
        let id = w.next_id;
        w.next_id = w.next_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| WireError::Protocol(format!("encoding {}: {e}", api_name(R::KEY))))?;
        let len = i32::try_from(buf.len() - 4)
            .map_err(|_| WireError::Protocol("request too large".to_owned()))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((id, tx));
        if let Err(e) = w.half.write_all(&buf).await {
            return Err(WireError::Io(format!("writing to {}: {e}", self.addr)));
        }
        Ok(())
    }

    /// Closes the connection: calls waiting for an answer fail, the next call reconnects.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader.abort();
        fail_all(
            &self.pending,
            &WireError::Io(format!("connection to {} closed", self.addr)),
        );
    }

    async fn authenticate(&self, sasl: &Sasl, timeout: Duration) -> Result<(), WireError> {
        let hs = self
            .call(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name())),
                (1, 1),
                timeout,
            )
            .await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(WireError::Auth(format!(
                "the broker does not accept SASL mechanism {} ({}; it offers {})",
                sasl.mechanism.name(),
                error_name(hs.error_code),
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            )));
        }
        match sasl.mechanism {
            Mechanism::Plain => {
                let mut msg = Vec::new();
                msg.push(0);
                msg.extend_from_slice(sasl.username.as_bytes());
                msg.push(0);
                msg.extend_from_slice(sasl.password.expose().as_bytes());
                self.sasl_step(msg, timeout).await?;
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = ScramClient::new(sasl.mechanism, &sasl.username).map_err(auth)?;
                let first = scram.client_first();
                let server_first = self.sasl_step(first.into_bytes(), timeout).await?;
                let final_msg = scram
                    .client_final(&server_first, sasl.password.expose())
                    .map_err(auth)?;
                let server_final = self.sasl_step(final_msg.into_bytes(), timeout).await?;
                scram.verify_server(&server_final).map_err(auth)?;
            }
        }
        Ok(())
    }

    async fn sasl_step(&self, bytes: Vec<u8>, timeout: Duration) -> Result<Bytes, WireError> {
        let answer = self
            .call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                (0, 1),
                timeout,
            )
            .await?;
        if answer.error_code != 0 {
            return Err(WireError::Auth(
                answer
                    .error_message
                    .map(|m| m.as_str().to_owned())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| error_name(answer.error_code)),
            ));
        }
        Ok(answer.auth_bytes)
    }
}

/// Reads response frames and hands each to the call written first among those waiting.
async fn read_loop(
    mut read: ReadHalf<Box<dyn Stream>>,
    pending: Arc<Mutex<VecDeque<(i32, Answer)>>>,
    closed: Arc<AtomicBool>,
    addr: String,
) {
    let error = loop {
        let mut len = [0u8; 4];
        if let Err(e) = read.read_exact(&mut len).await {
            break WireError::Io(format!("reading from {addr}: {e}"));
        }
        let Ok(len) = usize::try_from(i32::from_be_bytes(len)) else {
            break WireError::Protocol(format!("{addr} sent a negative frame length"));
        };
        if !(4..=MAX_FRAME).contains(&len) {
            break WireError::Protocol(format!("{addr} sent a frame of {len} bytes"));
        }
        let mut frame = BytesMut::zeroed(len);
        if let Err(e) = read.read_exact(&mut frame).await {
            break WireError::Io(format!("reading from {addr}: {e}"));
        }
        let frame = frame.freeze();
        let id = (&frame[..4]).get_i32();
        let next = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match next {
            Some((expected, answer)) if expected == id => {
                let _ = answer.send(Ok(frame));
            }
            Some((expected, answer)) => {
                let e = WireError::Protocol(format!(
                    "{addr} answered request {id} while {expected} was next"
                ));
                let _ = answer.send(Err(e.clone()));
                break e;
            }
            None => {
                break WireError::Protocol(format!("{addr} answered a request never sent"));
            }
        }
    };
    closed.store(true, Ordering::Release);
    tracing::debug!(broker = %addr, error = %error, "kafka connection closed");
    fail_all(&pending, &error);
}

/// A failed SCRAM exchange as the broker connection reports it.
fn auth(e: super::scram::ScramError) -> WireError {
    WireError::Auth(e.to_string())
}

fn fail_all(pending: &Mutex<VecDeque<(i32, Answer)>>, error: &WireError) {
    let waiting: Vec<_> = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .collect();
    for (_, answer) in waiting {
        let _ = answer.send(Err(error.clone()));
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An error code a broker answered for one topic or partition; shown by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BrokerError(pub i16);

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_name(self.0))
    }
}

impl std::error::Error for BrokerError {}

/// The name of a Kafka error code, as the protocol documentation spells it.
pub(crate) fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} (error {code})"),
        None => format!("error {code}"),
    }
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("API {key}"),
    }
}
