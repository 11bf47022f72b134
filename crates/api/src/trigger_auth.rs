//! `TriggerAuthentication` (namespaced) and `ClusterTriggerAuthentication` (cluster-scoped):
//! where a trigger's credentials and other parameters come from.

// Each `printcolumn(...)` of the kube derive repeats the keys `name`, `type_` and `json_path`.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::enums::string_enum;

/// Sources of trigger parameters. Shared by both authentication kinds.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    plural = "triggerauthentications",
    shortname = "ta",
    shortname = "triggerauth",
    namespaced,
    status = "TriggerAuthenticationStatus",
    doc = "TriggerAuthentication supplies trigger parameters (credentials, connection strings) to triggers in its namespace.",
    derive = "PartialEq",
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledobjects"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledjobs"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Platform identity of the pod (workload identity) instead of secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// Parameters read from keys of Secrets (in the object's namespace; for the cluster kind,
    /// in the operator's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from keys of ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_target_ref: Option<Vec<AuthTargetRef>>,
    /// Parameters read from environment variables of the scale target's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<AuthEnvironment>>,
    /// Parameters read from files under the operator's file-auth root. ClusterTriggerAuthentication
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<Vec<AuthFilePath>>,
    /// Parameters read from HashiCorp Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashi_corp_vault: Option<HashiCorpVault>,
    /// Parameters read from Azure Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVault>,
    /// Parameters read from GCP Secret Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_secret_manager: Option<GcpSecretManager>,
    /// Parameters read from AWS Secrets Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_manager: Option<AwsSecretManager>,
    /// Parameters read from AWS Systems Manager Parameter Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_parameter_store: Option<AwsParameterStore>,
    /// Parameters filled with bound service account tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_service_account_token: Option<Vec<BoundServiceAccountToken>>,
    /// A parameter filled with an OAuth2 access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
}

/// Sources of trigger parameters, usable by triggers in every namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    plural = "clustertriggerauthentications",
    shortname = "cta",
    shortname = "clustertriggerauth",
    status = "TriggerAuthenticationStatus",
    doc = "ClusterTriggerAuthentication supplies trigger parameters to triggers in every namespace.",
    derive = "PartialEq",
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    ),
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(
        name = "VaultAddress",
        type_ = "string",
        json_path = ".spec.hashiCorpVault.address"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledobjects"
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        priority = 1,
        json_path = ".status.scaledjobs"
    )
)]
pub struct ClusterTriggerAuthenticationSpec {
    /// The parameter sources.
    #[serde(flatten)]
    pub sources: TriggerAuthenticationSpec,
}

impl std::ops::Deref for ClusterTriggerAuthenticationSpec {
    type Target = TriggerAuthenticationSpec;

    fn deref(&self) -> &Self::Target {
        &self.sources
    }
}

/// Observed state of a (Cluster)TriggerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerAuthenticationStatus {
    /// Comma-separated names of the ScaledObjects using this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// Comma-separated names of the ScaledJobs using this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

string_enum! {
    /// Pod identity providers.
    pub enum PodIdentityProvider {
        /// No pod identity (default).
        None = "none",
        /// Azure AD Workload Identity.
        AzureWorkload = "azure-workload",
        /// GCP Workload Identity.
        Gcp = "gcp",
        /// AWS IAM roles for service accounts.
        Aws = "aws",
        /// Deprecated AWS EKS pod identity webhook.
        AwsEks = "aws-eks",
    }
    schema_enum = true;
}

string_enum! {
    /// Whose identity is used during AWS auto-discovery.
    pub enum IdentityOwner {
        /// The operator's own identity.
        Keda = "keda",
        /// The scaled workload's identity.
        Workload = "workload",
    }
    schema_enum = true;
}

/// Platform-native identity used instead of secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthPodIdentity {
    /// The provider.
    pub provider: PodIdentityProvider,
    /// Azure: client id of the identity to use instead of the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Azure: tenant id overriding the default; requires identityId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_tenant_id: Option<String>,
    /// Azure: authority host overriding the default; requires identityTenantId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_authority_host: Option<String>,
    /// AWS: role to assume; not together with identityOwner workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// AWS: external id used when assuming roleArn.
    #[serde(
        rename = "externalID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// AWS: whose identity is used, keda or workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_owner: Option<IdentityOwner>,
}

/// A parameter read from one key of a Secret or ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuthTargetRef {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Name of the Secret or ConfigMap.
    pub name: String,
    /// Key within it.
    pub key: String,
}

/// A parameter read from an environment variable of the scale target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Name of the environment variable.
    pub name: String,
    /// Container to read from. Default: the scale target's envSourceContainerName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// A parameter read from a file relative to the operator's file-auth root.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuthFilePath {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Path relative to the file-auth root; must stay inside it.
    pub path: String,
}

/// A parameter filled with a token of a service account in the object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoundServiceAccountToken {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Service account whose token is requested.
    pub service_account_name: String,
}

string_enum! {
    /// Vault authentication methods.
    pub enum VaultAuthentication {
        /// A static token.
        Token = "token",
        /// Kubernetes service account login.
        Kubernetes = "kubernetes",
    }
}

string_enum! {
    /// Kinds of Vault secrets.
    pub enum VaultSecretType {
        /// Generic secret (empty type).
        Generic = "",
        /// KV version 1.
        Secret = "secret",
        /// KV version 2.
        SecretV2 = "secretV2",
        /// PKI certificate issuance.
        Pki = "pki",
    }
}

/// HashiCorp Vault as a parameter source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HashiCorpVault {
    /// Vault address.
    pub address: String,
    /// Vault Enterprise namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// token or kubernetes.
    pub authentication: VaultAuthentication,
    /// Role for kubernetes authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Mount of the kubernetes auth method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Credentials for the chosen authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<VaultCredential>,
    /// Secrets mapped to parameters.
    pub secrets: Vec<VaultSecret>,
}

/// Vault credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultCredential {
    /// Token for token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Path of the service account token file for kubernetes authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Service account whose bound token is used for kubernetes authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// One Vault secret mapped to a parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecret {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Path of the secret.
    pub path: String,
    /// Key within the secret.
    pub key: String,
    /// Kind of secret: "" (generic), secret, secretV2 or pki.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<VaultSecretType>,
    /// Certificate request data for pki secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki_data: Option<VaultPkiData>,
}

/// Certificate request data for a Vault pki secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultPkiData {
    /// Requested common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Requested DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_names: Option<String>,
    /// Requested IP subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_sans: Option<String>,
    /// Requested URI subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_sans: Option<String>,
    /// Requested other subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_sans: Option<String>,
    /// Requested lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Requested encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Reference to a key of a Kubernetes Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// A value taken from a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFromSecret {
    /// The Secret key.
    pub secret_key_ref: SecretKeyRef,
}

/// A credential whose value lives in a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    /// Where the value comes from.
    pub value_from: ValueFromSecret,
}

/// Azure Key Vault as a parameter source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVault {
    /// Vault URI.
    pub vault_uri: String,
    /// Secrets mapped to parameters.
    pub secrets: Vec<AzureKeyVaultSecret>,
    /// Service principal credentials, when not using pod identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AzureKeyVaultCredentials>,
    /// Pod identity used to reach the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// Cloud environment of the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<AzureKeyVaultCloud>,
}

/// Azure service principal credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCredentials {
    /// Application (client) id.
    pub client_id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Client secret.
    pub client_secret: SecretValue,
}

/// One Azure Key Vault secret mapped to a parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AzureKeyVaultSecret {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Secret name.
    pub name: String,
    /// Secret version. Default: latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

string_enum! {
    /// Azure cloud environments.
    pub enum AzureCloudType {
        /// Azure public cloud.
        AzurePublicCloud = "AzurePublicCloud",
        /// Azure US Government.
        AzureUsGovernmentCloud = "AzureUSGovernmentCloud",
        /// Azure China.
        AzureChinaCloud = "AzureChinaCloud",
        /// Azure Germany.
        AzureGermanCloud = "AzureGermanCloud",
        /// A private cloud; needs keyVaultResourceURL and activeDirectoryEndpoint.
        Private = "Private",
    }
}

/// Cloud environment of an Azure Key Vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultCloud {
    /// The cloud.
    #[serde(rename = "type")]
    pub type_: AzureCloudType,
    /// Key Vault resource URL (Private clouds).
    #[serde(
        rename = "keyVaultResourceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key_vault_resource_url: Option<String>,
    /// Active Directory endpoint (Private clouds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory_endpoint: Option<String>,
}

/// GCP Secret Manager as a parameter source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSecretManager {
    /// Secrets mapped to parameters.
    pub secrets: Vec<GcpSecretManagerSecret>,
    /// Service account key, when not using pod identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GcpCredentials>,
    /// Pod identity used to reach Secret Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
}

/// GCP credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpCredentials {
    /// Service account key.
    pub client_secret: SecretValue,
}

/// One GCP secret mapped to a parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GcpSecretManagerSecret {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Secret id.
    pub id: String,
    /// Secret version. Default: latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// AWS access keys held in Secrets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key: SecretValue,
    /// Secret access key.
    pub access_secret_key: SecretValue,
    /// Session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretValue>,
}

/// AWS Secrets Manager as a parameter source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManager {
    /// Secrets mapped to parameters.
    pub secrets: Vec<AwsSecretManagerSecret>,
    /// Access keys, when not using pod identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// Pod identity used to reach Secrets Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One AWS secret mapped to a parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretManagerSecret {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Secret name.
    pub name: String,
    /// Version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Version stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// Key within a JSON secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// AWS Systems Manager Parameter Store as a parameter source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsParameterStore {
    /// Parameters mapped to trigger parameters.
    pub parameters: Vec<AwsParameterStoreParameter>,
    /// Access keys, when not using pod identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// Pod identity used to reach Parameter Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<AuthPodIdentity>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One Parameter Store parameter mapped to a trigger parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsParameterStoreParameter {
    /// Trigger parameter to fill.
    pub parameter: String,
    /// Parameter name.
    pub name: String,
    /// Decrypt SecureString parameters. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_decryption: Option<bool>,
}

string_enum! {
    /// OAuth2 grant types.
    pub enum OAuth2Type {
        /// The client-credentials grant.
        ClientCredentials = "clientCredentials",
    }
}

/// An OAuth2 access token as a parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2 {
    /// Grant type; clientCredentials.
    #[serde(rename = "type")]
    pub type_: OAuth2Type,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretValue,
    /// Token endpoint.
    pub token_url: String,
    /// Requested scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Extra parameters of the token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url_params: Option<BTreeMap<String, String>>,
}

impl TriggerAuthenticationSpec {
    /// Every `(path, parameter)` this object fills, in KEDA's resolution order.
    pub fn parameters(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        push_params(
            &mut out,
            "env",
            list(&self.env).map(|e| e.parameter.as_str()),
        );
        push_params(
            &mut out,
            "secretTargetRef",
            list(&self.secret_target_ref).map(|r| r.parameter.as_str()),
        );
        push_params(
            &mut out,
            "configMapTargetRef",
            list(&self.config_map_target_ref).map(|r| r.parameter.as_str()),
        );
        push_params(
            &mut out,
            "filePath",
            list(&self.file_path).map(|r| r.parameter.as_str()),
        );
        push_params(
            &mut out,
            "boundServiceAccountToken",
            list(&self.bound_service_account_token).map(|r| r.parameter.as_str()),
        );
        if let Some(vault) = &self.hashi_corp_vault {
            push_params(
                &mut out,
                "hashiCorpVault.secrets",
                vault.secrets.iter().map(|s| s.parameter.as_str()),
            );
        }
        if let Some(akv) = &self.azure_key_vault {
            push_params(
                &mut out,
                "azureKeyVault.secrets",
                akv.secrets.iter().map(|s| s.parameter.as_str()),
            );
        }
        if let Some(gcp) = &self.gcp_secret_manager {
            push_params(
                &mut out,
                "gcpSecretManager.secrets",
                gcp.secrets.iter().map(|s| s.parameter.as_str()),
            );
        }
        if let Some(aws) = &self.aws_secret_manager {
            push_params(
                &mut out,
                "awsSecretManager.secrets",
                aws.secrets.iter().map(|s| s.parameter.as_str()),
            );
        }
        if let Some(aws) = &self.aws_parameter_store {
            push_params(
                &mut out,
                "awsParameterStore.parameters",
                aws.parameters.iter().map(|s| s.parameter.as_str()),
            );
        }
        out
    }
}

fn push_params<'a>(
    out: &mut Vec<(String, &'a str)>,
    field: &str,
    names: impl Iterator<Item = &'a str>,
) {
    for (i, parameter) in names.enumerate() {
        out.push((format!("spec.{field}[{i}].parameter"), parameter));
    }
}

fn list<T>(items: &Option<Vec<T>>) -> std::slice::Iter<'_, T> {
    items.as_deref().unwrap_or_default().iter()
}
