//! Kubernetes' protobuf request bodies for the built-in kinds imperative kubectl commands send
//! (`kubectl create namespace`, `deployment`, `configmap`, `secret`): client-go and kubectl send
//! `application/vnd.kubernetes.protobuf` for built-in kinds, and a real API server takes it.
//!
//! The envelope is the 4 bytes `k8s\0` and a `runtime.Unknown` message (type meta, the raw
//! object, its content type); the object is the kind's protobuf message. The messages are
//! described below as tables of (field number, JSON name, type) — the wire contract of
//! `k8s.io/api`'s `generated.proto` — and decoded into the JSON the rest of kube-sim works on.
//! A field this table does not know is an error naming it (415 for the request), never dropped:
//! kube-sim must not accept what it cannot store faithfully. Responses stay JSON, which every
//! such client also accepts (`Accept: application/vnd.kubernetes.protobuf,application/json`).

use serde_json::{Map, Value, json};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    I32,
    I64,
    Bool,
    Msg(&'static Msg),
    /// `meta/v1.Time`: seconds and nanos, JSON as RFC 3339.
    Time,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    IntOrString,
    /// `map<string, string>`.
    MapStr,
    /// `map<string, Quantity>`.
    MapQuantity,
    /// `map<string, bytes>`: JSON base64.
    MapBytes,
}

struct Field {
    tag: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// A pointer field in the Go type: sent only when set, so a zero value means something.
    /// Other scalars are always sent, and their zero value is the same as absent.
    pointer: bool,
}

/// One message type: its name (for errors) and its fields.
struct Msg {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: false,
        pointer: false,
    }
}

/// A pointer field (see [`Field::pointer`]).
const fn p(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: false,
        pointer: true,
    }
}

const fn r(tag: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: true,
        pointer: false,
    }
}

static OWNER_REFERENCE: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Ty::Str),
        f(3, "name", Ty::Str),
        f(4, "uid", Ty::Str),
        f(5, "apiVersion", Ty::Str),
        p(6, "controller", Ty::Bool),
        p(7, "blockOwnerDeletion", Ty::Bool),
    ],
};

static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "generateName", Ty::Str),
        f(3, "namespace", Ty::Str),
        f(4, "selfLink", Ty::Str),
        f(5, "uid", Ty::Str),
        f(6, "resourceVersion", Ty::Str),
        f(7, "generation", Ty::I64),
        f(8, "creationTimestamp", Ty::Time),
        f(9, "deletionTimestamp", Ty::Time),
        p(10, "deletionGracePeriodSeconds", Ty::I64),
        f(11, "labels", Ty::MapStr),
        f(12, "annotations", Ty::MapStr),
        r(13, "ownerReferences", Ty::Msg(&OWNER_REFERENCE)),
        r(14, "finalizers", Ty::Str),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[
        f(1, "key", Ty::Str),
        f(2, "operator", Ty::Str),
        r(3, "values", Ty::Str),
    ],
};

static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", Ty::MapStr),
        r(2, "matchExpressions", Ty::Msg(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static CONTAINER_PORT: Msg = Msg {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "hostPort", Ty::I32),
        f(3, "containerPort", Ty::I32),
        f(4, "protocol", Ty::Str),
        f(5, "hostIP", Ty::Str),
    ],
};

static ENV_VAR: Msg = Msg {
    name: "EnvVar",
    fields: &[f(1, "name", Ty::Str), f(2, "value", Ty::Str)],
};

static RESOURCE_REQUIREMENTS: Msg = Msg {
    name: "ResourceRequirements",
    fields: &[
        f(1, "limits", Ty::MapQuantity),
        f(2, "requests", Ty::MapQuantity),
    ],
};

static CONTAINER: Msg = Msg {
    name: "Container",
    fields: &[
        f(1, "name", Ty::Str),
        f(2, "image", Ty::Str),
        r(3, "command", Ty::Str),
        r(4, "args", Ty::Str),
        f(5, "workingDir", Ty::Str),
        r(6, "ports", Ty::Msg(&CONTAINER_PORT)),
        r(7, "env", Ty::Msg(&ENV_VAR)),
        f(8, "resources", Ty::Msg(&RESOURCE_REQUIREMENTS)),
        f(13, "terminationMessagePath", Ty::Str),
        f(14, "imagePullPolicy", Ty::Str),
        f(16, "stdin", Ty::Bool),
        f(17, "stdinOnce", Ty::Bool),
        f(18, "tty", Ty::Bool),
        f(20, "terminationMessagePolicy", Ty::Str),
        p(24, "restartPolicy", Ty::Str),
    ],
};

static TOLERATION: Msg = Msg {
    name: "Toleration",
    fields: &[
        f(1, "key", Ty::Str),
        f(2, "operator", Ty::Str),
        f(3, "value", Ty::Str),
        f(4, "effect", Ty::Str),
        p(5, "tolerationSeconds", Ty::I64),
    ],
};

static POD_SPEC: Msg = Msg {
    name: "PodSpec",
    fields: &[
        r(2, "containers", Ty::Msg(&CONTAINER)),
        f(3, "restartPolicy", Ty::Str),
        p(4, "terminationGracePeriodSeconds", Ty::I64),
        p(5, "activeDeadlineSeconds", Ty::I64),
        f(6, "dnsPolicy", Ty::Str),
        f(7, "nodeSelector", Ty::MapStr),
        f(8, "serviceAccountName", Ty::Str),
        f(9, "serviceAccount", Ty::Str),
        f(10, "nodeName", Ty::Str),
        f(11, "hostNetwork", Ty::Bool),
        f(12, "hostPID", Ty::Bool),
        f(13, "hostIPC", Ty::Bool),
        f(16, "hostname", Ty::Str),
        f(17, "subdomain", Ty::Str),
        f(19, "schedulerName", Ty::Str),
        r(20, "initContainers", Ty::Msg(&CONTAINER)),
        p(21, "automountServiceAccountToken", Ty::Bool),
        r(22, "tolerations", Ty::Msg(&TOLERATION)),
        f(24, "priorityClassName", Ty::Str),
        p(25, "priority", Ty::I32),
        p(27, "shareProcessNamespace", Ty::Bool),
        p(29, "runtimeClassName", Ty::Str),
        p(30, "enableServiceLinks", Ty::Bool),
        p(31, "preemptionPolicy", Ty::Str),
    ],
};

static POD_TEMPLATE_SPEC: Msg = Msg {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&POD_SPEC)),
    ],
};

static ROLLING_UPDATE_DEPLOYMENT: Msg = Msg {
    name: "RollingUpdateDeployment",
    fields: &[
        p(1, "maxUnavailable", Ty::IntOrString),
        p(2, "maxSurge", Ty::IntOrString),
    ],
};

static DEPLOYMENT_STRATEGY: Msg = Msg {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Ty::Str),
        f(2, "rollingUpdate", Ty::Msg(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

static DEPLOYMENT_SPEC: Msg = Msg {
    name: "DeploymentSpec",
    fields: &[
        p(1, "replicas", Ty::I32),
        f(2, "selector", Ty::Msg(&LABEL_SELECTOR)),
        f(3, "template", Ty::Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Ty::Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", Ty::I32),
        p(6, "revisionHistoryLimit", Ty::I32),
        f(7, "paused", Ty::Bool),
        p(9, "progressDeadlineSeconds", Ty::I32),
    ],
};

/// What a client sends of a Deployment's status (the server owns it; `conditions` is not
/// decoded).
static DEPLOYMENT_STATUS: Msg = Msg {
    name: "DeploymentStatus",
    fields: &[
        f(1, "observedGeneration", Ty::I64),
        f(2, "replicas", Ty::I32),
        f(3, "updatedReplicas", Ty::I32),
        f(4, "availableReplicas", Ty::I32),
        f(5, "unavailableReplicas", Ty::I32),
        f(7, "readyReplicas", Ty::I32),
        p(8, "collisionCount", Ty::I32),
    ],
};

static DEPLOYMENT: Msg = Msg {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Ty::Msg(&DEPLOYMENT_STATUS)),
    ],
};

static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[r(1, "finalizers", Ty::Str)],
};

static NAMESPACE_STATUS: Msg = Msg {
    name: "NamespaceStatus",
    fields: &[f(1, "phase", Ty::Str)],
};

static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&NAMESPACE_SPEC)),
        f(3, "status", Ty::Msg(&NAMESPACE_STATUS)),
    ],
};

static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::MapStr),
        f(3, "binaryData", Ty::MapBytes),
        p(4, "immutable", Ty::Bool),
    ],
};

static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::MapBytes),
        f(3, "type", Ty::Str),
        f(4, "stringData", Ty::MapStr),
        p(5, "immutable", Ty::Bool),
    ],
};

/// The kinds whose protobuf bodies are decoded: (apiVersion, kind, message).
static KINDS: &[(&str, &str, &Msg)] = &[
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("apps/v1", "Deployment", &DEPLOYMENT),
];

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(message: impl Into<String>) -> DecodeError {
    DecodeError(message.into())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or_else(|| err("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(err("a length runs past the end of the message"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next field: its number and value.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, DecodeError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| err("length too large"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            w => return Err(err(format!("unsupported wire type {w}"))),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not UTF-8")))
}

/// A nested message's fields by number (the last value of each, as protobuf merges).
fn nested(bytes: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, DecodeError> {
    let mut reader = Reader { bytes };
    let mut fields = Vec::new();
    while let Some(field) = reader.field()? {
        fields.push(field);
    }
    Ok(fields)
}

fn varint_of(fields: &[(u64, Wire<'_>)], tag: u64) -> Option<u64> {
    fields.iter().rev().find_map(|(t, w)| match w {
        Wire::Varint(v) if *t == tag => Some(*v),
        _ => None,
    })
}

fn bytes_of<'a>(fields: &[(u64, Wire<'a>)], tag: u64) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(t, w)| match w {
        Wire::Bytes(b) if *t == tag => Some(*b),
        _ => None,
    })
}

#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
fn value(ty: Ty, wire: &Wire<'_>, name: &str) -> Result<Value, DecodeError> {
    let wrong = || err(format!("field {name:?} has the wrong wire type"));
    match (ty, wire) {
        (Ty::Str, Wire::Bytes(b)) => Ok(Value::String(text(b, name)?)),
        (Ty::I32, Wire::Varint(v)) => Ok(json!(*v as i64 as i32)),
        (Ty::I64, Wire::Varint(v)) => Ok(json!(*v as i64)),
        (Ty::Bool, Wire::Varint(v)) => Ok(Value::Bool(*v != 0)),
        (Ty::Msg(msg), Wire::Bytes(b)) => decode_message(b, msg),
        // The zero time is sent as an empty message (JSON: null); nanoseconds are not read,
        // as the API server does not (JSON carries whole seconds).
        (Ty::Time, Wire::Bytes([])) => Ok(Value::Null),
        (Ty::Time, Wire::Bytes(b)) => {
            let fields = nested(b)?;
            let seconds = varint_of(&fields, 1).unwrap_or(0) as i64;
            let t = jiff::Timestamp::new(seconds, 0)
                .map_err(|e| err(format!("field {name:?} is not a valid time: {e}")))?;
            Ok(Value::String(format!("{t:.0}")))
        }
        (Ty::Quantity, Wire::Bytes(b)) => {
            let fields = nested(b)?;
            Ok(Value::String(text(
                bytes_of(&fields, 1).unwrap_or_default(),
                name,
            )?))
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            let fields = nested(b)?;
            if varint_of(&fields, 1) == Some(1) {
                Ok(Value::String(text(
                    bytes_of(&fields, 3).unwrap_or_default(),
                    name,
                )?))
            } else {
                Ok(json!(varint_of(&fields, 2).unwrap_or(0) as i64 as i32))
            }
        }
        _ => Err(wrong()),
    }
}

fn map_entry(ty: Ty, wire: &Wire<'_>, name: &str) -> Result<(String, Value), DecodeError> {
    let Wire::Bytes(b) = wire else {
        return Err(err(format!("field {name:?} has the wrong wire type")));
    };
    let fields = nested(b)?;
    let key = text(bytes_of(&fields, 1).unwrap_or_default(), name)?;
    let raw = bytes_of(&fields, 2).unwrap_or_default();
    let v = match ty {
        Ty::MapQuantity => value(Ty::Quantity, &Wire::Bytes(raw), name)?,
        Ty::MapBytes => Value::String(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            raw,
        )),
        _ => Value::String(text(raw, name)?),
    };
    Ok((key, v))
}

fn decode_message(bytes: &[u8], msg: &Msg) -> Result<Value, DecodeError> {
    let mut reader = Reader { bytes };
    let mut out = Map::new();
    while let Some((tag, wire)) = reader.field()? {
        let Some(field) = msg.fields.iter().find(|f| f.tag == tag) else {
            return Err(err(format!(
                "kube-sim does not decode field {tag} of {} from protobuf; send this object as JSON",
                msg.name
            )));
        };
        match field.ty {
            Ty::MapStr | Ty::MapQuantity | Ty::MapBytes => {
                let (k, v) = map_entry(field.ty, &wire, field.name)?;
                let entry = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
            }
            ty if field.repeated => {
                let v = value(ty, &wire, field.name)?;
                let entry = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = entry {
                    a.push(v);
                }
            }
            ty => {
                let v = value(ty, &wire, field.name)?;
                let zero = matches!(&v, Value::String(t) if t.is_empty())
                    || v == json!(0)
                    || v == Value::Bool(false);
                if field.pointer || !zero {
                    out.insert(field.name.to_owned(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body (`k8s\0` + `runtime.Unknown`) into the object's JSON, with
/// its apiVersion and kind.
pub fn decode_object(body: &[u8]) -> Result<Value, DecodeError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| err("the body does not start with the protobuf envelope's magic bytes"))?;
    let unknown = nested(rest)?;
    let type_meta = nested(bytes_of(&unknown, 1).unwrap_or_default())?;
    let api_version = text(bytes_of(&type_meta, 1).unwrap_or_default(), "apiVersion")?;
    let kind = text(bytes_of(&type_meta, 2).unwrap_or_default(), "kind")?;
    if let Some(encoding) = bytes_of(&unknown, 3)
        && !encoding.is_empty()
    {
        return Err(err(format!(
            "content encoding {:?} is not supported",
            String::from_utf8_lossy(encoding)
        )));
    }
    let Some((_, _, msg)) = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        return Err(err(format!(
            "kube-sim decodes protobuf only for {}; send {kind} ({api_version}) as JSON",
            KINDS
                .iter()
                .map(|(v, k, _)| format!("{k} ({v})"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let mut object = decode_message(bytes_of(&unknown, 2).unwrap_or_default(), msg)?;
    if let Value::Object(m) = &mut object {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
        // An empty status is what a client sends; it is the server's to fill.
        if m.get("status").is_some_and(|s| s == &json!({})) {
            m.remove("status");
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal protobuf writer for the tests (what client-go's generated marshallers emit).
    fn key(tag: u64, wire: u64, out: &mut Vec<u8>) {
        varint((tag << 3) | wire, out);
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn bytes(tag: u64, b: &[u8], out: &mut Vec<u8>) {
        key(tag, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn int(tag: u64, v: u64, out: &mut Vec<u8>) {
        key(tag, 0, out);
        varint(v, out);
    }
    fn msg(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        build(&mut out);
        out
    }
    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let type_meta = msg(|m| {
            bytes(1, api_version.as_bytes(), m);
            bytes(2, kind.as_bytes(), m);
        });
        bytes(1, &type_meta, &mut out);
        bytes(2, raw, &mut out);
        bytes(4, MEDIA_TYPE.as_bytes(), &mut out);
        out
    }

    #[test]
    fn a_deployment_as_kubectl_create_sends_it_decodes_to_its_json() {
        let labels = msg(|m| {
            bytes(1, b"app", m);
            bytes(2, b"web", m);
        });
        let meta = msg(|m| {
            bytes(1, b"web", m);
            bytes(11, &labels, m);
            bytes(8, &[], m); // creationTimestamp: null
        });
        let quantity = msg(|m| bytes(1, b"100m", m));
        let limit = msg(|m| {
            bytes(1, b"cpu", m);
            bytes(2, &quantity, m);
        });
        let container = msg(|m| {
            bytes(1, b"nginx", m);
            bytes(2, b"nginx:1", m);
            bytes(8, &msg(|r| bytes(1, &limit, r)), m);
        });
        let template = msg(|m| {
            bytes(1, &msg(|t| bytes(11, &labels, t)), m);
            bytes(2, &msg(|s| bytes(2, &container, s)), m);
        });
        let surge = msg(|m| {
            int(1, 1, m);
            bytes(3, b"25%", m);
        });
        let spec = msg(|m| {
            int(1, 3, m);
            bytes(2, &msg(|s| bytes(1, &labels, s)), m);
            bytes(3, &template, m);
            bytes(4, &msg(|s| bytes(2, &msg(|r| bytes(2, &surge, r)), s)), m);
        });
        let raw = msg(|m| {
            bytes(1, &meta, m);
            bytes(2, &spec, m);
            bytes(3, &[], m);
        });
        let object = decode_object(&envelope("apps/v1", "Deployment", &raw)).unwrap_or_default();
        assert_eq!(
            object,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": null},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx:1", "resources": {"limits": {"cpu": "100m"}}}]}
                    },
                    "strategy": {"rollingUpdate": {"maxSurge": "25%"}}
                }
            })
        );
    }

    #[test]
    fn unknown_fields_kinds_and_broken_bodies_are_errors_not_dropped() {
        let ns = msg(|m| bytes(1, &msg(|x| bytes(1, b"foo", x)), m));
        let object = decode_object(&envelope("v1", "Namespace", &ns)).unwrap_or_default();
        assert_eq!(object["metadata"]["name"], "foo");
        let odd = msg(|m| bytes(1, &msg(|x| bytes(99, b"?", x)), m));
        let e = decode_object(&envelope("v1", "Namespace", &odd)).unwrap_err();
        assert!(e.0.contains("field 99 of ObjectMeta"), "{e}");
        let e = decode_object(&envelope("v1", "Pod", &ns)).unwrap_err();
        assert!(e.0.contains("send Pod (v1) as JSON"), "{e}");
        assert!(decode_object(b"{\"kind\":1}").is_err());
        let mut truncated = envelope("v1", "Namespace", &ns);
        truncated.truncate(truncated.len() - 3);
        assert!(decode_object(&truncated).is_err());
        // Scalars a Go client always sends: zero is the same as absent, except for pointers.
        let zeros = msg(|m| {
            bytes(
                1,
                &msg(|x| {
                    bytes(1, b"foo", x);
                    bytes(2, b"", x);
                    int(7, 0, x);
                }),
                m,
            );
            bytes(3, &msg(|x| bytes(1, b"", x)), m);
        });
        let object = decode_object(&envelope("v1", "Namespace", &zeros)).unwrap_or_default();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}})
        );
        let scaled_to_zero = msg(|m| bytes(2, &msg(|s| int(1, 0, s)), m));
        let object =
            decode_object(&envelope("apps/v1", "Deployment", &scaled_to_zero)).unwrap_or_default();
        assert_eq!(object["spec"]["replicas"], 0, "a pointer's zero is kept");
    }
}
