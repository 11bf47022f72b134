//! Semantic rules of TriggerAuthentication and ClusterTriggerAuthentication.

use std::collections::HashMap;
use std::path::{Component, Path};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::trigger_auth::{
    AuthPodIdentity, AzureCloudType, ClusterTriggerAuthentication, IdentityOwner, OAuth2Type,
    PodIdentityProvider, TriggerAuthentication, TriggerAuthenticationSpec, VaultAuthentication,
    VaultSecretType,
};

use super::meta;
use super::problem::{FieldPath, Findings, ProblemKind};

/// Every problem and warning of a TriggerAuthentication.
pub fn check(ta: &TriggerAuthentication) -> Findings {
    check_kind(&ta.metadata, &ta.spec, false)
}

/// Every problem and warning of a ClusterTriggerAuthentication.
pub fn check_cluster(cta: &ClusterTriggerAuthentication) -> Findings {
    check_kind(&cta.metadata, &cta.spec.sources, true)
}

fn check_kind(metadata: &ObjectMeta, spec: &TriggerAuthenticationSpec, cluster: bool) -> Findings {
    let mut out = Findings::default();
    meta::check(metadata, !cluster, &mut out);
    check_spec(spec, cluster, &mut out);
    out
}

/// Every problem and warning of an authentication spec; `cluster` for the cluster-scoped kind.
pub fn check_spec(spec: &TriggerAuthenticationSpec, cluster: bool, out: &mut Findings) {
    let path = FieldPath::new("spec");
    if let Some(identity) = &spec.pod_identity {
        check_pod_identity(identity, &path.field("podIdentity"), out);
    }
    let target_refs = [
        ("secretTargetRef", &spec.secret_target_ref),
        ("configMapTargetRef", &spec.config_map_target_ref),
    ];
    for (field, refs) in target_refs {
        for (i, r) in refs.iter().flatten().enumerate() {
            let at = path.field(field).index(i);
            non_empty(
                out,
                &at,
                &[
                    ("parameter", &r.parameter),
                    ("name", &r.name),
                    ("key", &r.key),
                ],
            );
        }
    }
    for (i, e) in spec.env.iter().flatten().enumerate() {
        let at = path.field("env").index(i);
        non_empty(out, &at, &[("parameter", &e.parameter), ("name", &e.name)]);
    }
    for (i, t) in spec
        .bound_service_account_token
        .iter()
        .flatten()
        .enumerate()
    {
        let at = path.field("boundServiceAccountToken").index(i);
        non_empty(
            out,
            &at,
            &[
                ("parameter", &t.parameter),
                ("serviceAccountName", &t.service_account_name),
            ],
        );
    }
    check_file_paths(spec, cluster, &path, out);
    check_vault(spec, &path.field("hashiCorpVault"), out);
    check_cloud_stores(spec, &path, out);
    if let Some(oauth) = &spec.oauth2 {
        let at = path.field("oauth2");
        if let OAuth2Type::Other(other) = &oauth.type_ {
            out.problem(
                ProblemKind::NotSupported,
                at.field("type"),
                format!("unsupported value {other:?}: supported values: \"clientCredentials\""),
            );
        }
        non_empty(
            out,
            &at,
            &[
                ("clientId", &oauth.client_id),
                ("tokenUrl", &oauth.token_url),
            ],
        );
    }
    check_duplicate_parameters(spec, out);
    if spec == &TriggerAuthenticationSpec::default() {
        out.warn(path, "this object supplies no parameters");
    }
}

fn check_pod_identity(identity: &AuthPodIdentity, path: &FieldPath, out: &mut Findings) {
    let provider = &identity.provider;
    if let PodIdentityProvider::Other(other) = provider {
        out.problem(
            ProblemKind::NotSupported,
            path.field("provider"),
            format!(
                "unsupported provider {other:?}: supported values: {}",
                PodIdentityProvider::KNOWN
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if *provider == PodIdentityProvider::AwsEks {
        out.warn(
            path.field("provider"),
            "provider aws-eks is deprecated; use aws",
        );
    }
    let azure = *provider == PodIdentityProvider::AzureWorkload;
    let aws = matches!(
        provider,
        PodIdentityProvider::Aws | PodIdentityProvider::AwsEks
    );
    if azure && identity.identity_id.as_deref() == Some("") {
        out.invalid(
            path.field("identityId"),
            "identityId must not be empty when set",
        );
    }
    if identity.identity_tenant_id.is_some()
        && identity.identity_id.as_deref().is_none_or(str::is_empty)
    {
        out.required(
            path.field("identityId"),
            "identityTenantId requires identityId",
        );
    }
    if identity.identity_authority_host.is_some()
        && identity
            .identity_tenant_id
            .as_deref()
            .is_none_or(str::is_empty)
    {
        out.required(
            path.field("identityTenantId"),
            "identityAuthorityHost requires identityTenantId",
        );
    }
    let workload_owner = identity.identity_owner == Some(IdentityOwner::Workload);
    if aws && workload_owner && identity.role_arn.as_deref().is_some_and(|r| !r.is_empty()) {
        out.problem(
            ProblemKind::Forbidden,
            path.field("roleArn"),
            "roleArn cannot be set when identityOwner is workload",
        );
    }
    if !azure && identity.identity_id.is_some() {
        out.warn(
            path.field("identityId"),
            format!("identityId is only used by azure-workload, not {provider}"),
        );
    }
    if !aws && (identity.role_arn.is_some() || identity.identity_owner.is_some()) {
        out.warn(
            path.clone(),
            format!("roleArn and identityOwner are only used by aws, not {provider}"),
        );
    }
}

fn check_file_paths(
    spec: &TriggerAuthenticationSpec,
    cluster: bool,
    path: &FieldPath,
    out: &mut Findings,
) {
    let Some(files) = &spec.file_path else { return };
    let at = path.field("filePath");
    if !cluster {
        out.problem(
            ProblemKind::Forbidden,
            at.clone(),
            "filePath is only supported by ClusterTriggerAuthentication",
        );
    }
    for (i, f) in files.iter().enumerate() {
        let entry = at.index(i);
        non_empty(
            out,
            &entry,
            &[("parameter", &f.parameter), ("path", &f.path)],
        );
        let p = Path::new(&f.path);
        let escapes = p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            });
        if escapes {
            out.invalid(
                entry.field("path"),
                format!(
                    "{:?} must be a relative path that stays inside the file-auth root",
                    f.path
                ),
            );
        }
        if f.path.contains("kubernetes.io/serviceaccount") {
            out.problem(
                ProblemKind::Forbidden,
                entry.field("path"),
                "service account credentials may not be read through filePath",
            );
        }
    }
}

fn check_vault(spec: &TriggerAuthenticationSpec, path: &FieldPath, out: &mut Findings) {
    let Some(vault) = &spec.hashi_corp_vault else {
        return;
    };
    non_empty(out, path, &[("address", &vault.address)]);
    let credential = vault.credential.as_ref();
    match &vault.authentication {
        VaultAuthentication::Token => {
            if credential
                .and_then(|c| c.token.as_deref())
                .is_none_or(str::is_empty)
            {
                out.required(
                    path.field("credential").field("token"),
                    "token authentication needs credential.token",
                );
            }
        }
        VaultAuthentication::Kubernetes => {
            if vault.role.as_deref().is_none_or(str::is_empty) {
                out.required(path.field("role"), "kubernetes authentication needs a role");
            }
            if vault.mount.as_deref().is_none_or(str::is_empty) {
                out.required(
                    path.field("mount"),
                    "kubernetes authentication needs the mount of the auth method",
                );
            }
        }
        VaultAuthentication::Other(other) => out.problem(
            ProblemKind::NotSupported,
            path.field("authentication"),
            format!("unsupported value {other:?}: supported values: \"token\", \"kubernetes\""),
        ),
    }
    if vault.secrets.is_empty() {
        out.required(path.field("secrets"), "at least one secret is required");
    }
    for (i, secret) in vault.secrets.iter().enumerate() {
        let at = path.field("secrets").index(i);
        non_empty(
            out,
            &at,
            &[
                ("parameter", &secret.parameter),
                ("path", &secret.path),
                ("key", &secret.key),
            ],
        );
        if let Some(VaultSecretType::Other(other)) = &secret.type_ {
            out.problem(
                ProblemKind::NotSupported,
                at.field("type"),
                format!("unsupported value {other:?}: supported values: \"\", \"secret\", \"secretV2\", \"pki\""),
            );
        }
    }
}

fn check_cloud_stores(spec: &TriggerAuthenticationSpec, path: &FieldPath, out: &mut Findings) {
    if let Some(akv) = &spec.azure_key_vault {
        let at = path.field("azureKeyVault");
        non_empty(out, &at, &[("vaultUri", &akv.vault_uri)]);
        if akv.credentials.is_none() && akv.pod_identity.is_none() {
            out.required(
                at.field("credentials"),
                "credentials or podIdentity is required",
            );
        }
        if let Some(identity) = &akv.pod_identity {
            check_pod_identity(identity, &at.field("podIdentity"), out);
        }
        if let Some(cloud) = &akv.cloud {
            let cloud_path = at.field("cloud");
            match &cloud.type_ {
                AzureCloudType::Private => {
                    if cloud
                        .key_vault_resource_url
                        .as_deref()
                        .is_none_or(str::is_empty)
                    {
                        out.required(
                            cloud_path.field("keyVaultResourceURL"),
                            "a Private cloud needs keyVaultResourceURL",
                        );
                    }
                    if cloud
                        .active_directory_endpoint
                        .as_deref()
                        .is_none_or(str::is_empty)
                    {
                        out.required(
                            cloud_path.field("activeDirectoryEndpoint"),
                            "a Private cloud needs activeDirectoryEndpoint",
                        );
                    }
                }
                AzureCloudType::Other(other) => out.problem(
                    ProblemKind::NotSupported,
                    cloud_path.field("type"),
                    format!(
                        "unsupported value {other:?}: supported values: {}",
                        AzureCloudType::KNOWN
                            .iter()
                            .map(|v| format!("{v:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                _ => {}
            }
        }
    }
    if let Some(gcp) = &spec.gcp_secret_manager
        && gcp.credentials.is_none()
        && gcp.pod_identity.is_none()
    {
        out.required(
            path.field("gcpSecretManager").field("credentials"),
            "credentials or podIdentity is required",
        );
    }
    if let Some(aws) = &spec.aws_secret_manager
        && aws.credentials.is_none()
        && aws.pod_identity.is_none()
    {
        out.required(
            path.field("awsSecretManager").field("credentials"),
            "credentials or podIdentity is required",
        );
    }
    if let Some(aws) = &spec.aws_parameter_store
        && aws.credentials.is_none()
        && aws.pod_identity.is_none()
    {
        out.required(
            path.field("awsParameterStore").field("credentials"),
            "credentials or podIdentity is required",
        );
    }
}

fn check_duplicate_parameters(spec: &TriggerAuthenticationSpec, out: &mut Findings) {
    let mut first: HashMap<&str, String> = HashMap::new();
    for (path, parameter) in spec.parameters() {
        if parameter.is_empty() {
            continue;
        }
        if let Some(earlier) = first.get(parameter) {
            out.warn(
                FieldPath::new(path),
                format!("parameter {parameter:?} is also set by {earlier}; the value resolved later wins"),
            );
        } else {
            first.insert(parameter, path);
        }
    }
}

fn non_empty(out: &mut Findings, at: &FieldPath, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        if value.is_empty() {
            out.required(at.field(name), format!("{name} must not be empty"));
        }
    }
}
