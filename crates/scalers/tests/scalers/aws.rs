//! `aws-sqs-queue` against moto (PyPI `moto[server]`) started by the tests with signature checks
//! on (`INITIAL_NO_AUTH_ACTION_COUNT`): an IAM user with an access key and a role are created in
//! the few unsigned actions moto allows, and queues are filled with boto3 — not through the code
//! under test.

use std::time::Duration;

use ringscale_scalers::{
    AwsEnv, ErrorKind, MetricSpec, Secret, Sources, SourcesConfig, TriggerInput,
};
use serde_json::Value;

use crate::common::*;

const REGION: &str = "eu-west-1";

struct Moto {
    endpoint: String,
    key: String,
    secret: String,
    role: String,
    _proc: Proc,
}

/// moto with signature checks on after the five unsigned setup actions.
async fn moto() -> Option<Moto> {
    if !program(
        "moto_server",
        "AWS emulator (PyPI moto[server] flask flask-cors) for the aws tests",
    ) {
        return None;
    }
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let proc = Proc::spawn_env(
        "moto_server",
        &["-H", "127.0.0.1", "-p", &port.to_string()],
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "5")],
    );
    eventually(30, || {
        let addr = format!("127.0.0.1:{port}");
        async move {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let setup = boto3(
        &endpoint,
        "x",
        "y",
        r#"
import json
iam = client("iam")
iam.create_user(UserName="ringscale")
k = iam.create_access_key(UserName="ringscale")["AccessKey"]
allow = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
iam.put_user_policy(UserName="ringscale", PolicyName="all", PolicyDocument=allow)
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
role = iam.create_role(RoleName="scaler", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
iam.put_role_policy(RoleName="scaler", PolicyName="all", PolicyDocument=allow)
print(json.dumps({"key": k["AccessKeyId"], "secret": k["SecretAccessKey"], "role": role}))
"#,
    );
    let v: Value = serde_json::from_str(setup.trim()).unwrap();
    Some(Moto {
        endpoint,
        key: v["key"].as_str().unwrap().to_owned(),
        secret: v["secret"].as_str().unwrap().to_owned(),
        role: v["role"].as_str().unwrap().to_owned(),
        _proc: proc,
    })
}

/// Runs `script` with boto3 (`client(service)` builds a client for moto); its standard output.
fn boto3(endpoint: &str, key: &str, secret: &str, script: &str) -> String {
    let prelude = format!(
        "import boto3\ndef client(service):\n    return boto3.client(service, endpoint_url={endpoint:?}, region_name={REGION:?}, aws_access_key_id={key:?}, aws_secret_access_key={secret:?})\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("{prelude}{script}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Moto {
    fn sqs(&self, script: &str) -> String {
        boto3(
            &self.endpoint,
            &self.key,
            &self.secret,
            &format!("sqs = client('sqs')\n{script}"),
        )
    }

    fn queue(&self, name: &str) -> String {
        self.sqs(&format!(
            "print(sqs.create_queue(QueueName={name:?})['QueueUrl'])"
        ))
        .trim()
        .to_owned()
    }

    fn trigger(&self, url: &str, extra: &[(&str, &str)], auth: &[(&str, &str)]) -> TriggerInput {
        let mut m = vec![
            ("queueURL", url),
            ("awsRegion", REGION),
            ("awsEndpoint", self.endpoint.as_str()),
        ];
        m.extend_from_slice(extra);
        let mut i = input("aws-sqs-queue", &m);
        i.auth_params = auth
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        i
    }

    fn keys(&self) -> [(&str, &str); 2] {
        [
            ("awsAccessKeyID", self.key.as_str()),
            ("awsSecretAccessKey", self.secret.as_str()),
        ]
    }
}

#[tokio::test]
async fn sqs_queue_length_follows_sent_received_and_delayed_messages() {
    let Some(moto) = moto().await else { return };
    let name = unique("orders");
    let url = moto.queue(&name);
    let sources = Sources::default();
    let scaler = build(
        &moto.trigger(&url, &[("queueLength", "4")], &moto.keys()),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    let MetricSpec::External(m) = &specs[0] else {
        panic!("{specs:?}")
    };
    assert_eq!(m.name, format!("s0-aws-sqs-{name}"));
    assert_eq!(m.target_milli, 4000);
    assert_eq!(value(&scaler).await, (0.0, false));

    moto.sqs(&format!(
        "for i in range(3): sqs.send_message(QueueUrl={url:?}, MessageBody=str(i))"
    ));
    assert_eq!(value(&scaler).await, (3.0, true));

    // One received and in flight: still counted unless scaleOnInFlight is false.
    moto.sqs(&format!(
        "sqs.receive_message(QueueUrl={url:?}, MaxNumberOfMessages=1, VisibilityTimeout=300)"
    ));
    assert_eq!(value(&scaler).await, (3.0, true));
    let visible_only = build(
        &moto.trigger(&url, &[("scaleOnInFlight", "false")], &moto.keys()),
        &sources,
    );
    assert_eq!(value(&visible_only).await, (2.0, true));

    // A delayed message counts only with scaleOnDelayed.
    moto.sqs(&format!(
        "sqs.send_message(QueueUrl={url:?}, MessageBody='later', DelaySeconds=600)"
    ));
    assert_eq!(value(&scaler).await, (3.0, true));
    let with_delayed = build(
        &moto.trigger(
            &url,
            &[("scaleOnDelayed", "true"), ("activationQueueLength", "4")],
            &moto.keys(),
        ),
        &sources,
    );
    assert_eq!(value(&with_delayed).await, (4.0, false));

    moto.sqs(&format!("sqs.purge_queue(QueueUrl={url:?})"));
    assert_eq!(value(&scaler).await, (0.0, false));

    // Every trigger of the same region and keys shares one credentials cache and one client.
    assert_eq!(sources.counts().aws, 1);
    assert_eq!(sources.counts().http, 1);
}

#[tokio::test]
async fn wrong_keys_a_missing_queue_and_a_role_assumed_through_sts() {
    let Some(moto) = moto().await else { return };
    let url = moto.queue(&unique("jobs"));
    moto.sqs(&format!(
        "sqs.send_message(QueueUrl={url:?}, MessageBody='x')"
    ));
    let sources = Sources::default();

    // A wrong secret: refused by the signature check, reported as a configuration problem
    // without the secret.
    let wrong = build(
        &moto.trigger(
            &url,
            &[],
            &[
                ("awsAccessKeyID", moto.key.as_str()),
                ("awsSecretAccessKey", "not-the-secret"),
            ],
        ),
        &sources,
    );
    let err = poll(&wrong).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");

    // A queue that does not exist.
    let missing_url = url.rsplit_once('/').unwrap().0.to_owned() + "/no-such-queue";
    let missing = build(&moto.trigger(&missing_url, &[], &moto.keys()), &sources);
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("QueueDoesNotExist"), "{err}");

    // awsRoleArn: assumed through STS with the replica's own credentials.
    let operator = AwsEnv {
        access_key_id: Some(moto.key.clone()),
        secret_access_key: Some(Secret::new(moto.secret.clone())),
        session_token: None,
        sts_endpoint: Some(moto.endpoint.clone()),
    };
    let with_operator = Sources::new(SourcesConfig {
        aws: operator.clone(),
        ..SourcesConfig::default()
    });
    let role = build(
        &moto.trigger(&url, &[], &[("awsRoleArn", moto.role.as_str())]),
        &with_operator,
    );
    assert_eq!(value(&role).await, (1.0, true));
    // identityOwner operator: the replica's credentials directly.
    let own = build(
        &moto.trigger(&url, &[("identityOwner", "operator")], &[]),
        &with_operator,
    );
    assert_eq!(value(&own).await, (1.0, true));

    // Without credentials of its own the replica can do neither, and says so.
    let bare = Sources::new(SourcesConfig {
        aws: AwsEnv::default(),
        ..SourcesConfig::default()
    });
    let err = poll(&build(
        &moto.trigger(&url, &[], &[("awsRoleArn", moto.role.as_str())]),
        &bare,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("no AWS credentials"), "{err}");

    // The replica's credentials are wrong: STS refuses the role.
    let wrong_operator = Sources::new(SourcesConfig {
        aws: AwsEnv {
            secret_access_key: Some(Secret::new("wrong")),
            ..operator
        },
        ..SourcesConfig::default()
    });
    let err = poll(&build(
        &moto.trigger(&url, &[], &[("awsRoleArn", moto.role.as_str())]),
        &wrong_operator,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("assuming role"), "{err}");
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out() {
    let hole = Blackhole::start().await;
    let mut i = input(
        "aws-sqs-queue",
        &[
            (
                "queueURL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
            ),
            ("awsRegion", REGION),
            ("awsEndpoint", &format!("http://{}", hole.addr)),
        ],
    );
    i.auth_params = [
        ("awsAccessKeyID".to_owned(), "AKID".to_owned()),
        ("awsSecretAccessKey".to_owned(), "secret".to_owned()),
    ]
    .into_iter()
    .collect();
    i.default_timeout = Duration::from_millis(300);
    let err = poll(&build(&i, &Sources::default())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[test]
fn sqs_parameters_and_credentials_are_checked_as_keda_checks_them() {
    let errors = problems(&input("aws-sqs-queue", &[]));
    assert_problem(&errors, "queueURL", "required");
    assert_problem(&errors, "awsRegion", "required");

    let base = [
        (
            "queueURL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
        ),
        ("awsRegion", REGION),
    ];
    let text = |errors: Vec<ringscale_scalers::ScalerError>| messages(&errors);
    // No credentials at all (identityOwner pod): KEDA's "awsAccessKeyID not found".
    assert!(text(problems(&input("aws-sqs-queue", &base))).contains("awsAccessKeyID not found"));
    // A key without its secret.
    let mut i = input("aws-sqs-queue", &base);
    i.auth_params = [("awsAccessKeyID".to_owned(), "AKID".to_owned())]
        .into_iter()
        .collect();
    assert!(text(problems(&i)).contains("awsSecretAccessKey not found"));
    // The FromEnv forms.
    let mut i = input(
        "aws-sqs-queue",
        &[
            base[0],
            base[1],
            ("awsAccessKeyIDFromEnv", "AWS_KEY"),
            ("awsSecretAccessKeyFromEnv", "AWS_SECRET"),
        ],
    );
    i.resolved_env = [
        ("AWS_KEY".to_owned(), "AKID".to_owned()),
        ("AWS_SECRET".to_owned(), "s3cret".to_owned()),
    ]
    .into_iter()
    .collect();
    assert!(ringscale_scalers::parse(&i).is_ok());
    // identityOwner operator needs nothing from the trigger.
    assert!(
        ringscale_scalers::parse(&input(
            "aws-sqs-queue",
            &[base[0], base[1], ("identityOwner", "operator")]
        ))
        .is_ok()
    );
    // A URL without /<account>/<name>.
    let errors = problems(&input(
        "aws-sqs-queue",
        &[
            ("queueURL", "https://sqs.eu-west-1.amazonaws.com/q"),
            ("awsRegion", REGION),
            ("identityOwner", "operator"),
        ],
    ));
    assert_problem(&errors, "queueURL", "cannot get queueName");
}
