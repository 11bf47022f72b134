//! A real API server's audit log read as kube-sim's request log, so that the checks tests and
//! chaos scenarios make on "the requests the replicas made" run unchanged against a real
//! cluster (`--audit-log-path`, policy level `Metadata` or above, JSON lines).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::stats::RequestRecord;

/// The audit log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the audit log {}", path.display())]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The completed requests of the audit log at `path` after byte `from`, one per request (its
/// `ResponseComplete` event), each timed when it was answered, on this process's clock.
pub fn read(path: &Path, from: u64) -> Result<Vec<RequestRecord>, AuditError> {
    use std::io::{BufRead as _, Seek as _};
    let io = |source| AuditError {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(from)).map_err(io)?;
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(io)?;
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        // Watches end with ResponseComplete too; other stages repeat the request.
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let Some(at) = event["stageTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from)
        else {
            continue;
        };
        let ago = wall.duration_since(at).unwrap_or_default();
        let object = &event["objectRef"];
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let field_manager = uri.split_once('?').and_then(|(_, query)| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("fieldManager=").map(str::to_owned))
        });
        out.push(RequestRecord {
            user: text(&event["user"]["username"]).unwrap_or_default(),
            verb: text(&event["verb"]).unwrap_or_default(),
            group: text(&object["apiGroup"]).unwrap_or_default(),
            resource: text(&object["resource"]).unwrap_or_default(),
            subresource: text(&object["subresource"]),
            namespace: text(&object["namespace"]),
            name: text(&object["name"]),
            code: event["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            at: now.checked_sub(ago).unwrap_or(now),
            user_agent: text(&event["userAgent"]),
            field_manager,
        });
    }
    Ok(out)
}
