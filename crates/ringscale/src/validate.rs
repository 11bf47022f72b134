//! `ringscale validate`: will these manifests work? Answered offline, every problem at once.
//!
//! Every keda.sh object is checked against its schema and KEDA's rules; the triggers of
//! ScaledObjects and ScaledJobs are then checked by their scalers' parsers, with parameters
//! resolved from the Secrets, ConfigMaps, TriggerAuthentications and workloads found anywhere
//! in the input. What the input does not contain cannot be seen offline: references to it are
//! warnings ("not checked"), not errors.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret};
use ringscale_api::manifest::{self, Document, Judgement, LocatedProblem};
use ringscale_api::validate::FieldPath;
use ringscale_api::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication};
use ringscale_scalers::auth::{
    ObjectSet, ProblemKind, config_map_data, secret_data, unsupported_sources,
};
use ringscale_scalers::prepare::{self, PreparedTrigger, Settings};
use serde::Serialize;
use serde_json::Value;

/// Files larger than this are refused rather than read.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Arguments of `ringscale validate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every object is valid, 1 when any object is invalid or a \
                        document is not valid YAML, 2 when an input cannot be read."
)]
pub struct ValidateArgs {
    /// A manifest file, a directory of .yaml/.yml/.json files, or '-' for standard input.
    /// May be given several times.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
    /// Also read the subdirectories of directories.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One line per object, then its problems.
    Text,
    /// A JSON array with one element per judged object.
    Json,
}

/// One judged object and the file it came from.
#[derive(Debug, Serialize)]
struct Entry {
    #[serde(flatten)]
    judgement: Judgement,
    file: String,
    /// For ScaledObjects and ScaledJobs: each trigger and the metric names the HPA will see.
    #[serde(skip_serializing_if = "Option::is_none")]
    triggers: Option<Vec<TriggerSummary>>,
}

/// A trigger of a ScaledObject or ScaledJob.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerSummary {
    index: usize,
    #[serde(rename = "type")]
    type_: String,
    /// Metric names as the HPA sees them; empty when unknown offline (an `external` trigger's
    /// server names them) or when the trigger is invalid.
    metric_names: Vec<String>,
}

#[derive(Debug, Default)]
struct Outcome {
    entries: Vec<Entry>,
    references: usize,
    read_errors: Vec<String>,
}

/// Validates the inputs and prints the verdicts.
pub fn run(args: ValidateArgs) -> ExitCode {
    let ValidateArgs {
        files,
        recursive,
        output,
    } = args;
    let mut outcome = Outcome::default();
    let mut documents: Vec<(String, Document)> = Vec::new();
    for input in &files {
        for source in expand(input, recursive, &mut outcome.read_errors) {
            match read(&source) {
                Ok(text) => parse_text(&display(&source), &text, &mut documents, &mut outcome),
                Err(err) => outcome.read_errors.push(err.to_string()),
            }
        }
    }
    let objects = references(&documents);
    for (file, doc) in &documents {
        if manifest::is_judged(doc) {
            outcome.entries.push(judge_document(file, doc, &objects));
        } else {
            outcome.references += 1;
        }
    }
    for err in &outcome.read_errors {
        eprintln!("error: {err}");
    }
    match output {
        Format::Text => print_text(&outcome),
        Format::Json => match serde_json::to_string_pretty(&outcome.entries) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                eprintln!("error: cannot render JSON: {err}");
                return ExitCode::from(2);
            }
        },
    }
    if !outcome.read_errors.is_empty() {
        ExitCode::from(2)
    } else if outcome.entries.iter().any(|e| !e.judgement.valid) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads the documents of one text; a YAML error becomes one invalid entry.
fn parse_text(
    file: &str,
    text: &str,
    documents: &mut Vec<(String, Document)>,
    outcome: &mut Outcome,
) {
    match manifest::parse(text) {
        Ok(docs) => documents.extend(docs.into_iter().map(|d| (file.to_owned(), d))),
        Err(err) => {
            let line = err.line.unwrap_or(1);
            outcome.entries.push(Entry {
                judgement: Judgement {
                    kind: None,
                    namespace: None,
                    name: None,
                    valid: false,
                    problems: vec![LocatedProblem {
                        path: FieldPath::root(),
                        message: format!("malformed YAML: {err}"),
                        line,
                    }],
                    warnings: Vec::new(),
                    line,
                },
                file: file.to_owned(),
                triggers: None,
            });
        }
    }
}

/// Namespace of objects that name none, as kubectl would apply them.
const DEFAULT_NAMESPACE: &str = "default";

/// The objects triggers may refer to: Secrets, ConfigMaps, TriggerAuthentications,
/// ClusterTriggerAuthentications and anything with a pod template (Deployments, StatefulSets,
/// Rollouts, ...). Anything else is not visible offline.
fn references(documents: &[(String, Document)]) -> ObjectSet {
    let mut set = ObjectSet::new(false);
    for (_, doc) in documents {
        let (Some(kind), Some(name)) = (doc.kind(), doc.name()) else {
            continue;
        };
        let namespace = doc.namespace().unwrap_or(DEFAULT_NAMESPACE);
        match (doc.api_version(), kind) {
            (Some("v1"), "Secret") => {
                if let Some(secret) = decode::<Secret>(&doc.value).map(|s| secret_data(&s)) {
                    set.add_secret(namespace, name, secret);
                }
            }
            (Some("v1"), "ConfigMap") => {
                if let Some(data) = decode::<ConfigMap>(&doc.value).map(|c| config_map_data(&c)) {
                    set.add_config_map(namespace, name, data);
                }
            }
            (Some(ringscale_api::names::API_VERSION), "TriggerAuthentication") => {
                if let Some(ta) = decode::<TriggerAuthentication>(&doc.value).map(|t| t.spec) {
                    set.add_trigger_authentication(namespace, name, ta);
                }
            }
            (Some(ringscale_api::names::API_VERSION), "ClusterTriggerAuthentication") => {
                if let Some(cta) =
                    decode::<ClusterTriggerAuthentication>(&doc.value).map(|t| t.spec.sources)
                {
                    set.add_cluster_trigger_authentication(name, cta);
                }
            }
            _ => {
                if let Some(pod) = doc
                    .value
                    .pointer("/spec/template/spec")
                    .and_then(decode::<PodSpec>)
                {
                    set.add_workload(namespace, kind, name, pod);
                }
            }
        }
    }
    set
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

/// Judges one keda.sh object; ScaledObjects and ScaledJobs also get their triggers checked.
fn judge_document(file: &str, doc: &Document, objects: &ObjectSet) -> Entry {
    let mut judgement = manifest::judge(doc);
    let settings = Settings {
        default_namespace: DEFAULT_NAMESPACE,
        ..Settings::default()
    };
    let prepared = match doc.kind() {
        Some("ScaledObject") => serde_json::from_value::<ScaledObject>(doc.value.clone())
            .ok()
            .map(|so| prepare::scaled_object(&so, objects, &settings)),
        Some("ScaledJob") => serde_json::from_value::<ScaledJob>(doc.value.clone())
            .ok()
            .map(|sj| prepare::scaled_job(&sj, objects, &settings)),
        _ => None,
    };
    // Authentication sources ringscale cannot read: triggers using them will fail.
    let auth_spec = match doc.kind() {
        Some("TriggerAuthentication") => {
            decode::<TriggerAuthentication>(&doc.value).map(|t| t.spec)
        }
        Some("ClusterTriggerAuthentication") => {
            decode::<ClusterTriggerAuthentication>(&doc.value).map(|t| t.spec.sources)
        }
        _ => None,
    };
    for p in auth_spec
        .iter()
        .flat_map(|spec| unsupported_sources(spec, true))
    {
        let path = FieldPath::new(p.path);
        judgement.warnings.push(LocatedProblem {
            line: doc.line_of(&path),
            path,
            message: format!(
                "{} (triggers using this authentication will fail)",
                p.message
            ),
        });
    }
    let triggers = prepared.map(|prepared| {
        prepared
            .into_iter()
            .map(|p| check_trigger(p, doc, &mut judgement))
            .collect()
    });
    judgement
        .problems
        .sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
    judgement
        .warnings
        .sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
    judgement.valid = judgement.problems.is_empty();
    Entry {
        judgement,
        file: file.to_owned(),
        triggers,
    }
}

/// Checks one trigger with its scaler's parser and adds what it finds to the judgement.
fn check_trigger(
    prepared: PreparedTrigger,
    doc: &Document,
    judgement: &mut Judgement,
) -> TriggerSummary {
    let PreparedTrigger { input, problems } = prepared;
    let index = input.index;
    let type_ = input.trigger_type.clone();
    let locate = |path: String, message: String| {
        let path = FieldPath::new(path);
        LocatedProblem {
            line: doc.line_of(&path),
            path,
            message,
        }
    };
    for p in problems {
        let located = locate(p.path, p.message);
        if p.kind == ProblemKind::NotVisible {
            judgement.warnings.push(located);
        } else if !judgement.problems.iter().any(|q| q.path == located.path) {
            judgement.problems.push(located);
        }
    }
    // A trigger whose type the schema or KEDA's rules already reject has nothing to parse.
    let type_path = format!("spec.triggers[{index}].type");
    let mut metric_names = Vec::new();
    if judgement
        .problems
        .iter()
        .any(|p| p.path.as_str() == type_path)
    {
        return TriggerSummary {
            index,
            type_,
            metric_names,
        };
    }
    match ringscale_scalers::parse(&input) {
        Ok(parsed) => metric_names = parsed.offline_metric_names().unwrap_or_default(),
        Err(errors) => {
            for e in errors {
                let message = match &e.parameter {
                    Some(parameter) => format!("{type_} trigger, {parameter}: {}", e.message),
                    None => format!("{type_} trigger: {}", e.message),
                };
                let located = locate(e.field_path(), message);
                if !judgement.problems.iter().any(|q| q.path == located.path) {
                    judgement.problems.push(located);
                }
            }
        }
    }
    TriggerSummary {
        index,
        type_,
        metric_names,
    }
}

/// The files named by one `-f` argument, in a stable order.
fn expand(input: &Path, recursive: bool, errors: &mut Vec<String>) -> Vec<PathBuf> {
    if input == Path::new("-") || !input.is_dir() {
        return vec![input.to_owned()];
    }
    let mut found = Vec::new();
    let mut pending = vec![input.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(format!("cannot read directory {}: {err}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Why an input could not be read (the source as shown: a path or `<stdin>`).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is larger than {mib} MiB", mib = MAX_INPUT_BYTES >> 20)]
    TooLarge(String),
    #[error("{0} is not UTF-8 text: {1}")]
    NotUtf8(String, std::string::FromUtf8Error),
}

fn read(source: &Path) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    let limit = MAX_INPUT_BYTES + 1;
    let result = if source == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    if let Err(err) = result {
        return Err(ReadError::Io(display(source), err));
    }
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ReadError::TooLarge(display(source)));
    }
    String::from_utf8(bytes).map_err(|err| ReadError::NotUtf8(display(source), err))
}

fn display(source: &Path) -> String {
    if source == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        source.display().to_string()
    }
}

fn print_text(outcome: &Outcome) {
    let mut invalid = 0;
    for Entry {
        judgement: j, file, ..
    } in &outcome.entries
    {
        let what = match (&j.kind, &j.namespace, &j.name) {
            (None, ..) => "document".to_owned(),
            (Some(kind), Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (Some(kind), None, Some(name)) => format!("{kind} {name}"),
            (Some(kind), _, None) => format!("{kind} (unnamed)"),
        };
        if j.valid {
            let note = if j.warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} warning(s))", j.warnings.len())
            };
            println!("{file}:{}: {what}: OK{note}", j.line);
        } else {
            invalid += 1;
            println!(
                "{file}:{}: {what}: INVALID ({} problem(s))",
                j.line,
                j.problems.len()
            );
        }
        for p in &j.problems {
            println!("  {file}:{}: {p}", p.line);
        }
        for w in &j.warnings {
            println!("  {file}:{}: warning: {w}", w.line);
        }
    }
    let judged = outcome.entries.len();
    println!(
        "{judged} object(s) judged, {invalid} invalid; {} other object(s) read for reference",
        outcome.references
    );
}
