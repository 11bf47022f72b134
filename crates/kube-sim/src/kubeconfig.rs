//! The kubeconfig that lets kube-rs and kubectl reach the simulator unchanged.

use base64::Engine as _;
use serde_json::json;

use crate::tls::Identity;

/// Renders a kubeconfig with two users: `admin` (bearer token, the current context) and
/// `admin-cert` (client certificate, context `kube-sim-cert`).
pub fn render(
    server: &str,
    ca_pem: &str,
    token: &str,
    client: &Identity,
    namespace: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [
            {"name": "admin", "user": {"token": token}},
            {"name": "admin-cert", "user": {"client-certificate-data": b64(&client.cert_pem), "client-key-data": b64(&client.key_pem)}}
        ],
        "contexts": [
            {"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "admin", "namespace": namespace}},
            {"name": "kube-sim-cert", "context": {"cluster": "kube-sim", "user": "admin-cert", "namespace": namespace}}
        ],
        "current-context": "kube-sim",
        "preferences": {}
    });
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}

/// Renders a kubeconfig with a single bearer-token user.
pub fn render_token(
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
    namespace: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": user, "namespace": namespace}}],
        "current-context": "kube-sim",
        "preferences": {}
    });
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}
