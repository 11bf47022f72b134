//! `ringscale validate`: will these manifests work? Answered offline, every problem at once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ringscale_api::manifest::{self, Judgement, LocatedProblem};
use ringscale_api::validate::FieldPath;
use serde::Serialize;

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
    for input in &files {
        for source in expand(input, recursive, &mut outcome.read_errors) {
            match read(&source) {
                Ok(text) => judge_text(&display(&source), &text, &mut outcome),
                Err(err) => outcome.read_errors.push(err),
            }
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

/// Judges every keda.sh object of one text; a YAML error becomes one invalid entry.
fn judge_text(file: &str, text: &str, outcome: &mut Outcome) {
    match manifest::parse(text) {
        Ok(documents) => {
            for doc in &documents {
                if manifest::is_judged(doc) {
                    outcome.entries.push(Entry {
                        judgement: manifest::judge(doc),
                        file: file.to_owned(),
                    });
                } else {
                    outcome.references += 1;
                }
            }
        }
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
            });
        }
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

fn read(source: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    let limit = MAX_INPUT_BYTES + 1;
    let result = if source == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    if let Err(err) = result {
        return Err(format!("cannot read {}: {err}", display(source)));
    }
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "{} is larger than {} MiB",
            display(source),
            MAX_INPUT_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|err| format!("{} is not UTF-8 text: {err}", display(source)))
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
    for Entry { judgement: j, file } in &outcome.entries {
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
