//! The client side of SCRAM (RFC 5802) with SHA-256 and SHA-512, as Kafka's SASL/SCRAM
//! mechanisms use it, on `ring`'s HMAC, PBKDF2 and random generator (already in the build for
//! rustls).

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// A SASL mechanism ringscale speaks to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// The mechanism's name in the SASL handshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Servers asking for more iterations than this are refused (Kafka allows 4096 to 16384).
const MAX_ITERATIONS: u32 = 100_000;

/// One SCRAM exchange.
#[derive(Debug)]
pub(crate) struct ScramClient {
    sha512: bool,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

/// Why a SCRAM exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The system's random source failed.
    #[error("no random numbers for the SCRAM nonce")]
    NoRandom,
    /// A server message (which: first, final) is not UTF-8.
    #[error("the server's {0} SCRAM message is not UTF-8")]
    NotUtf8(&'static str),
    /// The server answered `e=` (its reason).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server's first message lacks or garbles a part (which).
    #[error("the server's SCRAM message has {0}")]
    Malformed(&'static str),
    /// The server's signature is wrong: it does not know the password.
    #[error("the server's SCRAM signature does not match: it does not know the password")]
    ServerSignature,
}

impl ScramClient {
    /// Starts an exchange for `username` with a fresh random nonce.
    pub fn new(mechanism: Mechanism, username: &str) -> Result<Self, ScramError> {
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ScramError::NoRandom)?;
        Ok(Self::with_nonce(mechanism, username, &B64.encode(raw)))
    }

    fn with_nonce(mechanism: Mechanism, username: &str, nonce: &str) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            sha512: mechanism == Mechanism::ScramSha512,
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_owned(),
            server_signature: None,
        }
    }

    /// The client's first message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client's final message (with the proof), from the server's first message.
    pub fn client_final(
        &mut self,
        server_first: &[u8],
        password: &str,
    ) -> Result<String, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::NotUtf8("first"))?;
        if let Some(e) = server_first.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_owned()));
        }
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                _ => {}
            }
        }
        let bad = ScramError::Malformed;
        let nonce = nonce.ok_or_else(|| bad("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("a nonce that does not extend the client's"));
        }
        let salt = B64
            .decode(salt.ok_or_else(|| bad("no salt"))?)
            .map_err(|_| bad("a salt that is not base64"))?;
        let iterations = iterations
            .ok_or_else(|| bad("no iteration count"))?
            .parse::<u32>()
            .ok()
            .filter(|i| *i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| bad("an iteration count out of range"))?;

        let (pbkdf, mac, dig, len) = if self.sha512 {
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
        pbkdf2::derive(pbkdf, iterations, &salt, password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(dig, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(mac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.server_signature = Some(
            hmac::sign(
                &hmac::Key::new(mac, server_key.as_ref()),
                auth_message.as_bytes(),
            )
            .as_ref()
            .to_vec(),
        );
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's final message: the server proves it knows the password too.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::NotUtf8("final"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_owned()));
        }
        let given = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or(v)).ok());
        match (given, &self.server_signature) {
            (Some(g), Some(expected)) if &g == expected => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3: SCRAM-SHA-256 for user "user", password "pencil".
    #[test]
    fn scram_sha256_matches_rfc_7677() {
        let mut c = ScramClient::with_nonce(Mechanism::ScramSha256, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_msg = c.client_final(server_first, "pencil").unwrap_or_default();
        assert_eq!(
            final_msg,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
        assert!(
            c.verify_server(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
    }

    // RFC 5802 section 5 (SHA-1) has no SHA-512 vector; this checks the shape and that a wrong
    // password gives a different proof.
    #[test]
    fn scram_sha512_proof_depends_on_the_password() {
        let server_first = b"r=abcdefXYZ,s=QSXCR+Q6sek8bf92,i=4096";
        let mut a = ScramClient::with_nonce(Mechanism::ScramSha512, "u,=x", "abcdef");
        assert_eq!(a.client_first(), "n,,n=u=2C=3Dx,r=abcdef");
        let pa = a.client_final(server_first, "one").unwrap_or_default();
        let mut b = ScramClient::with_nonce(Mechanism::ScramSha512, "u,=x", "abcdef");
        let pb = b.client_final(server_first, "two").unwrap_or_default();
        assert!(pa.starts_with("c=biws,r=abcdefXYZ,p="));
        assert_ne!(pa, pb);
        // 64-byte proof → 88 base64 characters.
        assert_eq!(pa.rsplit_once("p=").map(|(_, p)| p.len()), Some(88));
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let mut c = ScramClient::with_nonce(Mechanism::ScramSha256, "user", "abc");
        assert!(
            c.client_final(b"r=zzz,s=QSXCR+Q6sek8bf92,i=4096", "p")
                .is_err()
        );
        assert!(
            c.client_final(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096", "p")
                .is_err()
        );
        assert!(
            c.client_final(b"r=abcd,s=QSXCR+Q6sek8bf92,i=0", "p")
                .is_err()
        );
        assert!(
            c.client_final(b"r=abcd,s=QSXCR+Q6sek8bf92,i=99999999", "p")
                .is_err()
        );
        assert!(c.client_final(b"e=unknown-user", "p").is_err());
    }
}
