//! `azure-blob`: the number of blobs in a container, as KEDA's `azure_blob_scaler.go` counts
//! them — a hierarchical listing under `blobPrefix` + `blobDelimiter` (`/`) that counts blobs
//! and not virtual directories, or (`recursive: true`) every blob under the prefix, or, with
//! `globPattern`, every blob under the prefix whose name matches the pattern. All pages are
//! read. Target `blobCount` (5), active above `activationBlobCount` (0).

use super::azure::{self, Account, Resource, Service};
use crate::error::{ErrorKind, ParamSource};
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// An `azure-blob` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    container: String,
    blob_count: i64,
    activation_blob_count: i64,
    /// Empty for a flat listing.
    delimiter: String,
    /// With the delimiter appended, as KEDA's Validate does.
    prefix: String,
    glob: Option<globset::GlobMatcher>,
    account: Option<Account>,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let container = p.req_str(&["blobContainerName"], META);
    let blob_count = p.i64_or("blobCount", META, 5);
    let activation_blob_count = p.i64_or("activationBlobCount", META, 0);
    let mut delimiter = p
        .opt_str(&["blobDelimiter"], META)
        .unwrap_or_else(|| "/".to_owned());
    let mut prefix = p.opt_str(&["blobPrefix"], META).unwrap_or_default();
    let recursive = p.bool_or("recursive", META, false);
    let pattern = p.opt_str(&["globPattern"], META);
    azure::check_cloud(p, Service::Blob);
    let account = azure::parse_account(
        p,
        Service::Blob,
        &[ParamSource::Auth, ParamSource::Env, ParamSource::Metadata],
    );
    // KEDA's Validate.
    if recursive {
        delimiter.clear();
    }
    let glob = pattern.and_then(|pattern| match compile_glob(&pattern) {
        Ok(g) => Some(g),
        Err(e) => {
            p.fail_param(
                ErrorKind::Config,
                "globPattern",
                META,
                format!("invalid glob pattern {pattern:?}: {e}"),
            );
            None
        }
    });
    if !prefix.is_empty() && !delimiter.is_empty() {
        prefix.push_str(&delimiter);
    }
    Config {
        container,
        blob_count,
        activation_blob_count,
        delimiter,
        prefix,
        glob,
        account,
    }
}

/// A pattern as gobwas/glob compiles one without separators: `*` and `**` cross `/`; `?`,
/// `[a-z]`, `[!a]`, `{a,b}`. A leading `/` is dropped (blob names never start with one).
fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, globset::ErrorKind> {
    globset::GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().clone())
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("azure-blob-{}", self.container)),
            ),
            common.metric_type.clone(),
            self.blob_count as f64,
        ))]
    }
}

/// A built `azure-blob` trigger.
pub(crate) struct BlobScaler {
    config: Config,
    container: Resource,
}

impl BlobScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let container = Resource::new(sources, config.account.as_ref(), &config.container);
        BlobScaler { config, container }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let count = self
            .count()
            .await
            .map_err(|(kind, message)| common.error(kind, message))?;
        Ok(Poll::one(
            common.name(metric),
            count as f64,
            count > self.config.activation_blob_count,
        ))
    }

    async fn count(&self) -> Result<i64, (ErrorKind, String)> {
        let c = &self.config;
        // A glob lists flat; otherwise hierarchically with the delimiter (none when recursive).
        let delimiter = if c.glob.is_some() { "" } else { &c.delimiter };
        let mut marker = String::new();
        let mut count: i64 = 0;
        loop {
            let page = self
                .container
                .get(
                    "",
                    &[
                        ("restype", "container"),
                        ("comp", "list"),
                        ("prefix", &c.prefix),
                        ("delimiter", delimiter),
                        ("marker", &marker),
                    ],
                )
                .await?;
            let listing =
                parse_listing(&page.body).map_err(|e| (ErrorKind::Source, e.to_string()))?;
            count = count.saturating_add(match &c.glob {
                Some(g) => listing.names.iter().filter(|n| g.is_match(n)).count(),
                None => listing.names.len(),
            } as i64);
            match listing.next_marker {
                Some(next) if !next.is_empty() && next != marker => marker = next,
                _ => return Ok(count),
            }
        }
    }
}

/// One page of List Blobs: the blobs' names (not the virtual directories') and the marker of
/// the next page.
#[derive(Debug, Default, PartialEq)]
struct Listing {
    names: Vec<String>,
    next_marker: Option<String>,
}

/// Why a List Blobs answer cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum ListingError {
    /// Not XML (the parser's reason).
    #[error("the blob listing is not valid XML: {0}")]
    Xml(String),
    /// Deeper than a listing ever nests.
    #[error("the blob listing is nested too deeply")]
    TooDeep,
}

fn parse_listing(body: &[u8]) -> Result<Listing, ListingError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut encoded = false;
    let mut listing = Listing::default();
    let invalid = |e: &dyn std::fmt::Display| ListingError::Xml(e.to_string());
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| invalid(&e))? {
            Event::Start(e) => {
                if path.len() > 16 {
                    return Err(ListingError::TooDeep);
                }
                let local = e.local_name();
                let name: &str = local.as_ref();
                encoded = name == "Name"
                    && e.attributes().flatten().any(|a| {
                        let key = a.key.local_name();
                        let key: &str = key.as_ref();
                        key == "Encoded" && &*a.value == "true"
                    });
                path.push(name.to_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text.push(c),
                _ => text.push_str(
                    quick_xml::escape::resolve_xml_entity(&r.xml10_content())
                        .ok_or_else(|| invalid(&"unknown entity"))?,
                ),
            },
            Event::End(_) => {
                let inside = |names: &[&str]| {
                    path.len() >= names.len()
                        && path[path.len() - names.len()..]
                            .iter()
                            .zip(names)
                            .all(|(a, b)| a == b)
                };
                if inside(&["Blobs", "Blob", "Name"]) {
                    let name = if encoded {
                        percent_encoding::percent_decode_str(&text)
                            .decode_utf8_lossy()
                            .into_owned()
                    } else {
                        std::mem::take(&mut text)
                    };
                    listing.names.push(name);
                } else if path.len() == 2 && inside(&["NextMarker"]) {
                    listing.next_marker = Some(std::mem::take(&mut text));
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_count_blobs_not_prefixes() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1/acme/" ContainerName="logs">
  <Prefix>in/</Prefix><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>in/a&amp;b.json</Name><Properties><Content-Length>1</Content-Length></Properties></Blob>
    <BlobPrefix><Name>in/sub/</Name></BlobPrefix>
    <Blob><Name Encoded="true">in/%EF%BF%BF.json</Name></Blob>
  </Blobs>
  <NextMarker>2!abc</NextMarker>
</EnumerationResults>"#;
        let l = parse_listing(body).unwrap();
        assert_eq!(
            l.names,
            vec!["in/a&b.json".to_owned(), "in/\u{ffff}.json".to_owned()]
        );
        assert_eq!(l.next_marker.as_deref(), Some("2!abc"));
        let empty =
            parse_listing(b"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>")
                .unwrap();
        assert_eq!(empty, Listing::default());
        assert!(parse_listing(b"<EnumerationResults><Blobs>").is_ok_and(|l| l.names.is_empty()));
    }

    #[test]
    fn globs_match_as_gobwas_without_separators() {
        let g = compile_glob("/in/*.json").unwrap();
        assert!(g.is_match("in/a.json"));
        assert!(g.is_match("in/deep/a.json"));
        assert!(!g.is_match("in/a.txt"));
        let g = compile_glob("{a,b}?[!x].csv").unwrap();
        assert!(g.is_match("a1y.csv"));
        assert!(!g.is_match("a1x.csv"));
        assert!(compile_glob("[").is_err());
    }
}
