//! TLS client configuration from the PEM strings triggers carry (`ca`, `cert`, `key`) and
//! `unsafeSsl`.

use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::redact::Secret;

/// Installs the process-wide rustls crypto provider (ring) once. Client libraries that build
/// their own TLS configuration (redis, the AMQP client) need it.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first; that one is used instead.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TLS settings of a connection to an event source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// A PEM CA bundle trusted in addition to the public roots.
    pub ca: Option<String>,
    /// A PEM client certificate (chain).
    pub cert: Option<String>,
    /// The PEM private key of the client certificate.
    pub key: Option<Secret>,
    /// Skip verification of the server's certificate (`unsafeSsl`).
    pub insecure: bool,
}

/// The `ca`, `cert` and `key` of a trigger's authentication, checked as KEDA's etcd and kafka
/// scalers check them (cert and key together); `keyPassword` is reported unsupported, and a
/// malformed PEM as a problem of `ca`.
pub(crate) fn from_auth(p: &mut crate::params::Params<'_>, insecure: bool) -> TlsOptions {
    use crate::error::ErrorKind;
    use crate::params::AUTH;
    let tls = TlsOptions {
        ca: p.opt_str(&["ca"], AUTH),
        cert: p.opt_str(&["cert"], AUTH),
        key: p.opt_str(&["key"], AUTH).map(Secret::new),
        insecure,
    };
    match (&tls.cert, &tls.key) {
        (None, Some(_)) => p.fail(ErrorKind::Config, "cert must be provided with key"),
        (Some(_), None) => p.fail(ErrorKind::Config, "key must be provided with cert"),
        _ => {}
    }
    if p.opt_str(&["keyPassword"], AUTH).is_some() {
        p.fail_param(
            ErrorKind::Unsupported,
            "keyPassword",
            AUTH,
            "encrypted private keys are not supported by ringscale; give key unencrypted",
        );
    } else if let Err(e) = tls.client_config() {
        p.fail_param(ErrorKind::Config, "ca", AUTH, e.to_string());
    }
    tls
}

/// Why a trigger's TLS settings cannot make a client configuration (the parameter named first;
/// PEM contents are never quoted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the protocol versions (should not happen).
    #[error("TLS setup failed: {0}")]
    Setup(String),
    /// `ca` is not PEM.
    #[error("ca is not a valid PEM certificate: {0}")]
    CaPem(String),
    /// `ca` holds a certificate rustls cannot use as a root.
    #[error("ca is not a usable CA certificate: {0}")]
    CaUnusable(String),
    /// `ca` holds no certificate.
    #[error("ca contains no PEM certificate")]
    NoCa,
    /// `cert` is not PEM.
    #[error("cert is not a valid PEM certificate: {0}")]
    CertPem(String),
    /// `cert` holds no certificate.
    #[error("cert contains no PEM certificate")]
    NoCert,
    /// `key` is not an unencrypted PEM private key.
    #[error("key is not a valid unencrypted PEM private key")]
    Key,
    /// `cert` and `key` do not match.
    #[error("cert and key do not form a usable client identity: {0}")]
    Identity(String),
    /// `cert` without `key`.
    #[error("cert is given without key")]
    CertWithoutKey,
    /// `key` without `cert`.
    #[error("key is given without cert")]
    KeyWithoutCert,
}

impl TlsOptions {
    /// Builds a rustls client configuration. Errors describe which part is malformed.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(ca) = &self.ca {
                let mut added = 0;
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| TlsError::CaPem(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::CaUnusable(e.to_string()))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(TlsError::NoCa);
                }
            }
            builder.with_root_certificates(roots)
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::CertPem(e.to_string()))?;
                if chain.is_empty() {
                    return Err(TlsError::NoCert);
                }
                let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                    .map_err(|_| TlsError::Key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Identity(e.to_string()))
            }
            (Some(_), None) => Err(TlsError::CertWithoutKey),
            (None, Some(_)) => Err(TlsError::KeyWithoutCert),
            (None, None) => Ok(builder.with_no_client_auth()),
        }
    }
}

/// Accepts any server certificate (still checking handshake signatures), for `unsafeSsl`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_pem_is_reported_without_its_content() {
        let opts = TlsOptions {
            ca: Some(
                "-----BEGIN CERTIFICATE-----\nnot base64 secret-ish\n-----END CERTIFICATE-----\n"
                    .into(),
            ),
            ..Default::default()
        };
        let err = opts.client_config().unwrap_err();
        assert!(matches!(err, TlsError::CaPem(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("ca is not a valid PEM certificate"),
            "{text}"
        );
        assert!(!text.contains("secret-ish"));
        let opts = TlsOptions {
            cert: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(opts.client_config().unwrap_err(), TlsError::CertWithoutKey);
        assert_eq!(
            TlsError::CertWithoutKey.to_string(),
            "cert is given without key"
        );
        assert!(TlsOptions::default().client_config().is_ok());
        assert!(
            TlsOptions {
                insecure: true,
                ..Default::default()
            }
            .client_config()
            .is_ok()
        );
    }
}

/// A lazily connected gRPC channel to `endpoint` (an `http://host:port` URI with its timeouts
/// set) over TLS with `tls`. tonic checks, whenever any crate of the build enables one of its
/// TLS features (the replication crate does), that an `https` URI goes through its own TLS, and
/// refuses a connection our connector secured ("Connecting to HTTPS without TLS enabled"). So
/// tonic is given the `http` URI and the connector turns it back into `https` for rustls,
/// which then does the handshake (with ALPN h2) and checks the server's name.
pub(crate) fn grpc_channel(
    endpoint: tonic::transport::Endpoint,
    tls: &TlsOptions,
) -> Result<tonic::transport::Channel, TlsError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.client_config()?)
        .https_only()
        .enable_http2()
        .build();
    Ok(endpoint.connect_with_connector_lazy(AsHttps(connector)))
}

/// A connector that connects to the `https` form of the URI it is given.
#[derive(Clone)]
struct AsHttps<C>(C);

impl<C> tonic::codegen::Service<tonic::transport::Uri> for AsHttps<C>
where
    C: tonic::codegen::Service<tonic::transport::Uri>,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: tonic::transport::Uri) -> Self::Future {
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(tonic::codegen::http::uri::Scheme::HTTPS);
        // A URI that cannot take the scheme goes as it is (and is refused as not https).
        let secure = tonic::transport::Uri::from_parts(parts).unwrap_or(uri);
        self.0.call(secure)
    }
}
