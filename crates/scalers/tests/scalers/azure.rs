//! `azure-queue` and `azure-blob` against Azurite (npm `azurite`) started by the tests with an
//! account of their own (`AZURITE_ACCOUNTS`), so Shared Key signatures are checked with that
//! key; queues and containers are filled with Azure's Python SDK (PyPI `azure-storage-queue`,
//! `azure-storage-blob`) — not through the code under test.

use std::process::Stdio;
use std::time::Duration;

use ringscale_scalers::{ErrorKind, Sources, TriggerInput};

use crate::common::*;

const ACCOUNT: &str = "acme";
/// The test account's key (base64 of 64 bytes, as Azure's keys are).
const KEY: &str =
    "cmluZ3NjYWxlLXRlc3Qta2V5LXJpbmdzY2FsZS10ZXN0LWtleS1yaW5nc2NhbGUtdGVzdC1rZXktMDAwMDAwMA==";

struct Azurite {
    queue: String,
    blob: String,
    _procs: [Proc; 2],
}

fn python_sdk() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import azure.storage.queue, azure.storage.blob"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if require_services() {
            panic!(
                "Azure's Python SDK (PyPI azure-storage-queue azure-storage-blob) is required (RINGSCALE_REQUIRE_SERVICES=1) but not installed"
            );
        }
        eprintln!(
            "SKIP: Azure's Python SDK (PyPI azure-storage-queue azure-storage-blob) is not installed"
        );
    }
    found
}

/// Azurite's queue and blob services with the test account.
async fn azurite() -> Option<Azurite> {
    if !program(
        "azurite-queue",
        "Azure Storage emulator (npm azurite) for the azure tests",
    ) || !program(
        "azurite-blob",
        "Azure Storage emulator (npm azurite) for the azure tests",
    ) || !python_sdk()
    {
        return None;
    }
    let accounts = format!("{ACCOUNT}:{KEY}");
    let env = [("AZURITE_ACCOUNTS", accounts.as_str())];
    let (qp, bp) = (free_port(), free_port());
    let queue = Proc::spawn_env(
        "azurite-queue",
        &[
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            &qp.to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--silent",
        ],
        &env,
    );
    let blob = Proc::spawn_env(
        "azurite-blob",
        &[
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &bp.to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--silent",
        ],
        &env,
    );
    listening(qp).await;
    listening(bp).await;
    Some(Azurite {
        queue: format!("http://127.0.0.1:{qp}/{ACCOUNT}"),
        blob: format!("http://127.0.0.1:{bp}/{ACCOUNT}"),
        _procs: [queue, blob],
    })
}

impl Azurite {
    fn connection(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};QueueEndpoint={};BlobEndpoint={};",
            self.queue, self.blob
        )
    }

    /// Runs `script` with Azure's SDK; `conn` is the connection string. Its standard output.
    fn python(&self, script: &str) -> String {
        let prelude = format!(
            "from azure.storage.queue import QueueClient\nfrom azure.storage.blob import ContainerClient\nconn = {:?}\n",
            self.connection(KEY)
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &format!("{prelude}{script}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn trigger(
        &self,
        trigger_type: &str,
        metadata: &[(&str, &str)],
        connection: &str,
    ) -> TriggerInput {
        let mut i = input(trigger_type, metadata);
        i.auth_params = [("connection".to_owned(), connection.to_owned())]
            .into_iter()
            .collect();
        i
    }
}

#[tokio::test]
async fn queue_length_follows_sent_received_and_cleared_messages() {
    let Some(az) = azurite().await else { return };
    let name = unique("orders");
    az.python(&format!(
        "QueueClient.from_connection_string(conn, {name:?}).create_queue()"
    ));
    let sources = Sources::default();
    let conn = az.connection(KEY);
    let all = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", &name), ("activationQueueLength", "2")],
            &conn,
        ),
        &sources,
    );
    let specs = all.metric_specs().await.unwrap();
    assert_eq!(
        external(&specs),
        (format!("s0-azure-queue-{name}").as_str(), 5000)
    );
    assert_eq!(value(&all).await, (0.0, false));

    az.python(&format!(
        "q = QueueClient.from_connection_string(conn, {name:?})\nfor i in range(3): q.send_message(str(i))"
    ));
    assert_eq!(value(&all).await, (3.0, true));

    // One received and invisible: the approximate count still has it, visibleonly does not.
    az.python(&format!(
        "q = QueueClient.from_connection_string(conn, {name:?})\nnext(iter(q.receive_messages(messages_per_page=1, visibility_timeout=300)))"
    ));
    assert_eq!(value(&all).await, (3.0, true));
    let visible = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", &name), ("queueLengthStrategy", "visibleonly")],
            &conn,
        ),
        &sources,
    );
    assert_eq!(value(&visible).await, (2.0, true));

    // 32 visible or more: visibleonly falls back to the approximate count, as KEDA does.
    az.python(&format!(
        "q = QueueClient.from_connection_string(conn, {name:?})\nfor i in range(40): q.send_message(str(i))"
    ));
    assert_eq!(value(&visible).await, (43.0, true));
    assert_eq!(value(&all).await, (43.0, true));

    az.python(&format!(
        "QueueClient.from_connection_string(conn, {name:?}).clear_messages()"
    ));
    assert_eq!(value(&all).await, (0.0, false));
    assert_eq!(value(&visible).await, (0.0, false));
    // One account, one source and one client for every trigger on it.
    assert_eq!(sources.counts().azure, 1);
    assert_eq!(sources.counts().http, 1);
}

#[tokio::test]
async fn wrong_key_missing_queue_and_a_shared_access_signature() {
    let Some(az) = azurite().await else { return };
    let name = unique("jobs");
    az.python(&format!(
        "q = QueueClient.from_connection_string(conn, {name:?})\nq.create_queue()\nq.send_message('x')"
    ));
    let sources = Sources::default();

    // Another key of the right shape: refused by the signature check, reported as a
    // configuration problem without the key.
    let other_key =
        "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktb3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMDAwMA==";
    let wrong = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", &name)],
            &az.connection(other_key),
        ),
        &sources,
    );
    let err = poll(&wrong).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("AuthenticationFailed"), "{err}");
    assert!(!err.to_string().contains(other_key), "{err}");

    let missing = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", "no-such-queue")],
            &az.connection(KEY),
        ),
        &sources,
    );
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("QueueNotFound"), "{err}");

    // An account SAS made by the SDK, in a connection string without the key.
    let sas = az.python(
        r#"
from datetime import datetime, timedelta, timezone
from azure.storage.queue import generate_account_sas, ResourceTypes, AccountSasPermissions
key = conn.split("AccountKey=")[1].split(";")[0]
print(generate_account_sas("acme", key, ResourceTypes(service=True, container=True, object=True),
      AccountSasPermissions(read=True, list=True, process=True), datetime.now(timezone.utc) + timedelta(hours=1)))
"#,
    );
    let with_sas = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", &name)],
            &format!(
                "QueueEndpoint={};SharedAccessSignature={}",
                az.queue,
                sas.trim()
            ),
        ),
        &sources,
    );
    assert_eq!(value(&with_sas).await, (1.0, true));
    // A signature that does not match: refused.
    let forged = build(
        &az.trigger(
            "azure-queue",
            &[("queueName", &name)],
            &format!(
                "QueueEndpoint={};SharedAccessSignature={}",
                az.queue,
                sas.trim().replace("sig=", "sig=AAAA")
            ),
        ),
        &sources,
    );
    let err = poll(&forged).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");

    // The connection from the scale target's environment (connectionFromEnv).
    let mut from_env = input(
        "azure-queue",
        &[("queueName", &name), ("connectionFromEnv", "STORAGE")],
    );
    from_env.resolved_env = [("STORAGE".to_owned(), az.connection(KEY))]
        .into_iter()
        .collect();
    assert_eq!(value(&build(&from_env, &sources)).await, (1.0, true));
}

#[tokio::test]
async fn blob_count_follows_uploads_deletes_prefixes_and_globs() {
    let Some(az) = azurite().await else { return };
    let container = unique("logs");
    az.python(&format!(
        r#"
c = ContainerClient.from_connection_string(conn, {container:?})
c.create_container()
for n in ["in/a.json", "in/b.json", "in/sub/c.json", "out/d.json", "e.txt"]:
    c.upload_blob(n, b"x")
"#
    ));
    let sources = Sources::default();
    let conn = az.connection(KEY);
    let count = |extra: &[(&str, &str)]| {
        let mut m = vec![("blobContainerName", container.as_str())];
        m.extend_from_slice(extra);
        build(&az.trigger("azure-blob", &m, &conn), &sources)
    };
    // Hierarchical: the blobs directly under the prefix, not the virtual directories.
    let under_in = count(&[("blobPrefix", "in"), ("activationBlobCount", "2")]);
    let specs = under_in.metric_specs().await.unwrap();
    assert_eq!(
        external(&specs),
        (format!("s0-azure-blob-{container}").as_str(), 5000)
    );
    assert_eq!(value(&under_in).await, (2.0, false));
    assert_eq!(value(&count(&[])).await, (1.0, true));
    // Recursive: everything under the prefix.
    let recursive = count(&[("blobPrefix", "in"), ("recursive", "true")]);
    assert_eq!(value(&recursive).await, (3.0, true));
    assert_eq!(value(&count(&[("recursive", "true")])).await, (5.0, true));
    // Globs list flat: `*` crosses `/`; a leading `/` is dropped.
    let json = count(&[("globPattern", "/in/*.json")]);
    assert_eq!(value(&json).await, (3.0, true));
    assert_eq!(
        value(&count(&[("globPattern", "*.txt")])).await,
        (1.0, true)
    );
    assert_eq!(
        value(&count(&[("globPattern", "*.json"), ("blobPrefix", "out")])).await,
        (1.0, true)
    );

    az.python(&format!(
        r#"
c = ContainerClient.from_connection_string(conn, {container:?})
c.upload_blob("in/f.json", b"x")
c.delete_blob("in/sub/c.json")
c.upload_blob("in/sub/g.json", b"x")
c.upload_blob("in/sub/h.json", b"x")
"#
    ));
    assert_eq!(value(&under_in).await, (3.0, true));
    assert_eq!(value(&recursive).await, (5.0, true));
    assert_eq!(value(&json).await, (5.0, true));

    let missing = count(&[("blobContainerName", "no-such-container")]);
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("ContainerNotFound"), "{err}");
    assert_eq!(sources.counts().azure, 1);
}

#[tokio::test]
async fn a_storage_endpoint_that_never_answers_times_out() {
    let hole = Blackhole::start().await;
    let mut i = input("azure-queue", &[("queueName", "q")]);
    i.auth_params = [(
        "connection".to_owned(),
        format!(
            "AccountName=acme;AccountKey={KEY};QueueEndpoint=http://{}/acme",
            hole.addr
        ),
    )]
    .into_iter()
    .collect();
    i.default_timeout = Duration::from_millis(300);
    let err = poll(&build(&i, &Sources::default())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[test]
fn azure_parameters_are_checked_as_keda_checks_them() {
    let conn = format!("AccountName=acme;AccountKey={KEY}");
    let with_conn = |t: &str, m: &[(&str, &str)]| {
        let mut i = input(t, m);
        i.auth_params = [("connection".to_owned(), conn.clone())]
            .into_iter()
            .collect();
        i
    };
    let text = |errors: Vec<ringscale_scalers::ScalerError>| messages(&errors);

    let errors = problems(&input("azure-queue", &[]));
    assert_problem(&errors, "queueName", "required");
    assert!(text(errors).contains("no connection setting given"));
    assert!(
        text(problems(&input(
            "azure-blob",
            &[("blobContainerName", "c")]
        )))
        .contains("connection string is required")
    );
    assert!(ringscale_scalers::parse(&with_conn("azure-queue", &[("queueName", "q")])).is_ok());
    assert_problem(
        &problems(&with_conn(
            "azure-queue",
            &[("queueName", "q"), ("queueLengthStrategy", "VisibleOnly")],
        )),
        "queueLengthStrategy",
        "must be one of",
    );
    // cloud and endpointSuffix, as ParseAzureStorageEndpointSuffix checks them.
    assert_problem(
        &problems(&with_conn(
            "azure-queue",
            &[("queueName", "q"), ("cloud", "Mars")],
        )),
        "cloud",
        "invalid cloud environment",
    );
    assert_problem(
        &problems(&with_conn(
            "azure-blob",
            &[("blobContainerName", "c"), ("cloud", "Private")],
        )),
        "endpointSuffix",
        "must be provided",
    );
    assert!(
        ringscale_scalers::parse(&with_conn(
            "azure-blob",
            &[
                ("blobContainerName", "c"),
                ("cloud", "Private"),
                ("endpointSuffix", "blob.example.internal"),
            ]
        ))
        .is_ok()
    );
    assert_problem(
        &problems(&with_conn(
            "azure-blob",
            &[("blobContainerName", "c"), ("globPattern", "[")],
        )),
        "globPattern",
        "invalid glob pattern",
    );
    // A malformed connection string, and one with neither key nor signature.
    let mut i = input("azure-queue", &[("queueName", "q")]);
    i.auth_params = [("connection".to_owned(), "nonsense".to_owned())]
        .into_iter()
        .collect();
    assert_problem(&problems(&i), "authenticationRef", "malformed");
    i.auth_params = [("connection".to_owned(), "AccountName=acme".to_owned())]
        .into_iter()
        .collect();
    assert_problem(
        &problems(&i),
        "authenticationRef",
        "AccountKey or SharedAccessSignature",
    );
    // Workload identity: KEDA's checks, then reported unsupported.
    let mut i = input("azure-queue", &[("queueName", "q")]);
    i.pod_identity = Some("azure-workload".to_owned());
    let errors = problems(&i);
    assert!(text(errors.clone()).contains("no accountName given"));
    assert!(errors.iter().any(|e| e.kind == ErrorKind::Unsupported));
    i.pod_identity = Some("aws".to_owned());
    assert!(text(problems(&i)).contains("pod identity aws not supported for azure storage queues"));
}
