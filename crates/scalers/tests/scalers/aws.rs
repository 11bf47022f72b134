//! `aws-sqs-queue`, `aws-kinesis-stream`, `aws-dynamodb` and `aws-cloudwatch` against moto (PyPI `moto[server]`) started by the tests with signature checks
//! on (`INITIAL_NO_AUTH_ACTION_COUNT`): an IAM user with an access key and a role are created in
//! the few unsigned actions moto allows, and queues, streams, tables and metrics are filled with
//! boto3 — not through the code
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
    listening(port).await;
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
        let mut m = vec![("queueURL", url)];
        m.extend_from_slice(extra);
        self.trigger_of("aws-sqs-queue", &m, auth)
    }

    /// A trigger of `trigger_type` on this moto, in REGION.
    fn trigger_of(
        &self,
        trigger_type: &str,
        metadata: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> TriggerInput {
        let mut m = vec![
            ("awsRegion", REGION),
            ("awsEndpoint", self.endpoint.as_str()),
        ];
        m.extend_from_slice(metadata);
        let mut i = input(trigger_type, &m);
        i.auth_params = auth
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        i
    }

    fn run(&self, script: &str) -> String {
        boto3(&self.endpoint, &self.key, &self.secret, script)
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

#[tokio::test]
async fn kinesis_open_shards_follow_resharding() {
    let Some(moto) = moto().await else { return };
    let name = unique("clicks");
    moto.run(&format!(
        "k = client('kinesis')\nk.create_stream(StreamName={name:?}, ShardCount=1)"
    ));
    let sources = Sources::default();
    let scaler = build(
        &moto.trigger_of(
            "aws-kinesis-stream",
            &[("streamName", &name), ("activationShardCount", "1")],
            &moto.keys(),
        ),
        &sources,
    );
    let specs = scaler.metric_specs().await.unwrap();
    assert_eq!(
        external(&specs),
        (format!("s0-aws-kinesis-{name}").as_str(), 2000)
    );
    assert_eq!(value(&scaler).await, (1.0, false));

    moto.run(&format!(
        "k = client('kinesis')\nk.update_shard_count(StreamName={name:?}, TargetShardCount=4, ScalingType='UNIFORM_SCALING')"
    ));
    assert_eq!(value(&scaler).await, (4.0, true));

    let missing = build(
        &moto.trigger_of(
            "aws-kinesis-stream",
            &[("streamName", "no-such-stream")],
            &moto.keys(),
        ),
        &sources,
    );
    let err = poll(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("ResourceNotFound"), "{err}");

    let wrong = build(
        &moto.trigger_of(
            "aws-kinesis-stream",
            &[("streamName", &name)],
            &[
                ("awsAccessKeyID", moto.key.as_str()),
                ("awsSecretAccessKey", "not-the-secret"),
            ],
        ),
        &sources,
    );
    let err = poll(&wrong).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}

#[tokio::test]
async fn dynamodb_query_count_follows_puts_deletes_and_filters() {
    let Some(moto) = moto().await else { return };
    let table = unique("jobs");
    moto.run(&format!(
        r#"
d = client('dynamodb')
d.create_table(TableName={table:?},
    KeySchema=[{{'AttributeName': 'tenant', 'KeyType': 'HASH'}}, {{'AttributeName': 'id', 'KeyType': 'RANGE'}}],
    AttributeDefinitions=[{{'AttributeName': 'tenant', 'AttributeType': 'S'}}, {{'AttributeName': 'id', 'AttributeType': 'N'}},
                          {{'AttributeName': 'state', 'AttributeType': 'S'}}],
    GlobalSecondaryIndexes=[{{'IndexName': 'by-state', 'KeySchema': [{{'AttributeName': 'state', 'KeyType': 'HASH'}}],
                              'Projection': {{'ProjectionType': 'ALL'}}}}],
    BillingMode='PAY_PER_REQUEST')
"#
    ));
    let put = |tenant: &str, id: u32, state: &str| {
        moto.run(&format!(
            "client('dynamodb').put_item(TableName={table:?}, Item={{'tenant': {{'S': {tenant:?}}}, 'id': {{'N': '{id}'}}, 'state': {{'S': {state:?}}}}})"
        ));
    };
    let sources = Sources::default();
    let by_tenant = |extra: &[(&str, &str)]| {
        let mut m = vec![
            ("tableName", table.as_str()),
            ("targetValue", "2"),
            ("keyConditionExpression", "#t = :t"),
            ("expressionAttributeNames", r##"{"#t": "tenant"}"##),
            ("expressionAttributeValues", r#"{":t": {"S": "acme"}}"#),
        ];
        m.extend_from_slice(extra);
        build(&moto.trigger_of("aws-dynamodb", &m, &moto.keys()), &sources)
    };
    let all = by_tenant(&[("activationTargetValue", "1")]);
    let specs = all.metric_specs().await.unwrap();
    assert_eq!(
        external(&specs),
        (format!("s0-aws-dynamodb-{table}").as_str(), 2000)
    );
    assert_eq!(value(&all).await, (0.0, false));

    put("acme", 1, "open");
    assert_eq!(value(&all).await, (1.0, false));
    put("acme", 2, "open");
    put("acme", 3, "done");
    put("other", 1, "open");
    assert_eq!(value(&all).await, (3.0, true));

    // A filter on a non-key attribute, with a name and a value of its own.
    let open = by_tenant(&[
        ("filterExpression", "#s = :s"),
        (
            "expressionAttributeNames",
            r##"{"#t": "tenant", "#s": "state"}"##,
        ),
        (
            "expressionAttributeValues",
            r#"{":t": {"S": "acme"}, ":s": {"S": "open"}}"#,
        ),
    ]);
    assert_eq!(value(&open).await, (2.0, true));

    // A global secondary index.
    let mut m = vec![
        ("tableName", table.as_str()),
        ("targetValue", "2"),
        ("indexName", "by-state"),
        ("keyConditionExpression", "#s = :s"),
        ("expressionAttributeNames", r##"{"#s": "state"}"##),
        ("expressionAttributeValues", r#"{":s": {"S": "open"}}"#),
    ];
    let by_state = build(&moto.trigger_of("aws-dynamodb", &m, &moto.keys()), &sources);
    assert_eq!(value(&by_state).await, (3.0, true));

    moto.run(&format!(
        "client('dynamodb').delete_item(TableName={table:?}, Key={{'tenant': {{'S': 'acme'}}, 'id': {{'N': '1'}}}})"
    ));
    assert_eq!(value(&all).await, (2.0, true));
    assert_eq!(value(&open).await, (1.0, true));
    assert_eq!(value(&by_state).await, (2.0, true));

    // A table that does not exist: DynamoDB's own error.
    m[0] = ("tableName", "no-such-table");
    let err = poll(&build(
        &moto.trigger_of("aws-dynamodb", &m, &moto.keys()),
        &sources,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("ResourceNotFound"), "{err}");
    assert_eq!(sources.counts().aws, 1);
}

#[tokio::test]
async fn cloudwatch_metric_statistics_and_empty_windows() {
    let Some(moto) = moto().await else { return };
    let queue = unique("q");
    let sources = Sources::default();
    let trigger = |extra: &[(&str, &str)]| {
        let mut m = vec![
            ("namespace", "Ringscale/Test"),
            ("metricName", "Depth"),
            ("dimensionName", "QueueName;Tier"),
            ("targetMetricValue", "2.5"),
            ("minMetricValue", "0.5"),
            ("metricStatPeriod", "60"),
            ("metricCollectionTime", "300"),
            ("activationTargetMetricValue", "7"),
        ];
        m.extend_from_slice(extra);
        moto.trigger_of("aws-cloudwatch", &m, &moto.keys())
    };
    let dims = format!("{queue};gold");
    let average = build(&trigger(&[("dimensionValue", &dims)]), &sources);
    let specs = average.metric_specs().await.unwrap();
    assert_eq!(external(&specs), ("s0-aws-cloudwatch", 2500));

    // Nothing in the window: minMetricValue, or an error with ignoreNullValues false.
    assert_eq!(value(&average).await, (0.5, false));
    let strict = build(
        &trigger(&[("dimensionValue", &dims), ("ignoreNullValues", "false")]),
        &sources,
    );
    let err = poll(&strict).await.unwrap_err();
    assert!(err.to_string().contains("empty metric data"), "{err}");

    // Two points in one closed minute (90 s ago, so inside a window that ends at the last
    // minute boundary).
    moto.run(&format!(
        r#"
import datetime
cw = client('cloudwatch')
t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=90)
for v in (6.0, 10.0):
    cw.put_metric_data(Namespace='Ringscale/Test', MetricData=[{{'MetricName': 'Depth', 'Timestamp': t, 'Value': v, 'Unit': 'Count',
        'Dimensions': [{{'Name': 'QueueName', 'Value': {queue:?}}}, {{'Name': 'Tier', 'Value': 'gold'}}]}}])
"#
    ));
    assert_eq!(value(&average).await, (8.0, true));
    let sum = build(
        &trigger(&[("dimensionValue", &dims), ("metricStat", "Sum")]),
        &sources,
    );
    assert_eq!(value(&sum).await, (16.0, true));
    let max = build(
        &trigger(&[
            ("dimensionValue", &dims),
            ("metricStat", "Maximum"),
            ("metricUnit", "Count"),
        ]),
        &sources,
    );
    assert_eq!(value(&max).await, (10.0, true));
    let min = build(
        &trigger(&[("dimensionValue", &dims), ("metricStat", "Minimum")]),
        &sources,
    );
    assert_eq!(value(&min).await, (6.0, false));
    // Another dimension value has no points.
    let other = build(
        &trigger(&[("dimensionValue", &format!("{queue};silver"))]),
        &sources,
    );
    assert_eq!(value(&other).await, (0.5, false));
}

#[test]
fn kinesis_dynamodb_and_cloudwatch_parameters_are_checked_as_keda_checks_them() {
    let op = ("identityOwner", "operator");
    let region = ("awsRegion", REGION);
    let errors = problems(&input("aws-kinesis-stream", &[region, op]));
    assert_problem(&errors, "streamName", "required");

    // DynamoDB: targetValue is required unless the trigger feeds a formula only.
    let base = [
        region,
        op,
        ("tableName", "t"),
        ("keyConditionExpression", "#k = :k"),
        ("expressionAttributeNames", r##"{"#k": "pk"}"##),
        ("expressionAttributeValues", r#"{":k": {"S": "a"}}"#),
    ];
    let errors = problems(&input("aws-dynamodb", &base));
    assert_problem(&errors, "targetValue", "no targetValue given");
    let mut formula_only = input("aws-dynamodb", &base);
    formula_only.as_metric_source = true;
    assert!(ringscale_scalers::parse(&formula_only).is_ok());
    let mut bad = base.to_vec();
    bad.push(("targetValue", "5"));
    bad[4] = ("expressionAttributeNames", "{}");
    bad[5] = ("expressionAttributeValues", r#"{":k": {"N": 5}}"#);
    let errors = problems(&input("aws-dynamodb", &bad));
    assert_problem(&errors, "expressionAttributeNames", "empty map");
    assert_problem(&errors, "expressionAttributeValues", "invalid");
    let errors = problems(&input("aws-dynamodb", &[region, op, ("targetValue", "5")]));
    for key in [
        "tableName",
        "keyConditionExpression",
        "expressionAttributeNames",
        "expressionAttributeValues",
    ] {
        assert_problem(&errors, key, "required");
    }

    // CloudWatch: KEDA's Validate.
    let cw = |extra: &[(&str, &str)]| {
        let mut m = vec![
            region,
            op,
            ("targetMetricValue", "1"),
            ("minMetricValue", "0"),
        ];
        m.extend_from_slice(extra);
        input("aws-cloudwatch", &m)
    };
    let text = |errors: Vec<ringscale_scalers::ScalerError>| messages(&errors);
    assert!(text(problems(&cw(&[]))).contains("namespace not given"));
    assert!(
        text(problems(&cw(&[
            ("namespace", "n"),
            ("metricName", "m"),
            ("dimensionName", "a;b"),
            ("dimensionValue", "x"),
        ])))
        .contains("not matching in size")
    );
    let metric = [
        ("namespace", "n"),
        ("metricName", "m"),
        ("dimensionName", "a"),
        ("dimensionValue", "x"),
    ];
    assert!(ringscale_scalers::parse(&cw(&metric)).is_ok());
    let with = |extra: (&'static str, &'static str)| {
        let mut m = metric.to_vec();
        m.push(extra);
        problems(&cw(&m))
    };
    assert_problem(
        &with(("metricUnit", "Parsecs")),
        "metricUnit",
        "is not one of",
    );
    assert_problem(
        &with(("metricStatPeriod", "45")),
        "metricStatPeriod",
        "has to be one of",
    );
    assert_problem(
        &with(("metricStatPeriod", "90")),
        "metricStatPeriod",
        "multiple of 60",
    );
    assert_problem(
        &with(("metricCollectionTime", "90")),
        "metricCollectionTime",
        "multiple of metricStatPeriod",
    );
    // An expression needs none of the metric's parameters.
    assert!(
        ringscale_scalers::parse(&cw(&[(
            "expression",
            "SELECT MAX(Depth) FROM \"Ringscale/Test\""
        )]))
        .is_ok()
    );
    let errors = problems(&input("aws-cloudwatch", &[region, op, ("expression", "e")]));
    assert_problem(&errors, "targetMetricValue", "required");
    assert_problem(&errors, "minMetricValue", "required");
}
