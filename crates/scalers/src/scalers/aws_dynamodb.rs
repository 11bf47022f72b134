//! `aws-dynamodb`: the `Count` of one DynamoDB Query, as KEDA's `aws_dynamodb_scaler.go` runs
//! it — `tableName`, `keyConditionExpression`, `expressionAttributeNames` and
//! `expressionAttributeValues` (JSON), optional `indexName` and `filterExpression`; target
//! `targetValue` (required unless the trigger only feeds a scaling-modifiers formula), active
//! above `activationTargetValue` (0). Like KEDA, one page is asked for (DynamoDB counts at most
//! 1 MB of items per Query).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::aws::{self, Json, Service, Target};
use crate::error::ErrorKind;
use crate::metric::{ExternalMetric, MetricSpec, Poll, metric_name, normalize};
use crate::params::{META, Params};
use crate::sources::Sources;
use crate::trigger::Common;

/// An `aws-dynamodb` trigger.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    table_name: String,
    /// The Query's body (without `TableName` changes between polls: built once).
    query: Value,
    target_value: i64,
    activation_target_value: i64,
    target: Target,
}

pub(crate) fn parse(p: &mut Params<'_>) -> Config {
    let table_name = p.req_str(&["tableName"], META);
    let key_condition = p.req_str(&["keyConditionExpression"], META);
    let index_name = p.opt_str(&["indexName"], META);
    let filter = p.opt_str(&["filterExpression"], META);
    let names_text = p.req_str(&["expressionAttributeNames"], META);
    let values_text = p.req_str(&["expressionAttributeValues"], META);
    let given_target = p.opt_i64("targetValue", META);
    let target_value = match given_target {
        None | Some(-1) if p.input.as_metric_source => 0,
        None | Some(-1) => {
            p.fail_param(
                ErrorKind::Config,
                "targetValue",
                META,
                "no targetValue given",
            );
            0
        }
        Some(v) => v,
    };
    let activation_target_value = p.i64_or("activationTargetValue", META, 0);
    let names = if names_text.is_empty() {
        Map::new()
    } else {
        attribute_names(&names_text).unwrap_or_else(|e| {
            p.fail_param(
                ErrorKind::Config,
                "expressionAttributeNames",
                META,
                format!("error parsing expressionAttributeNames: {e}"),
            );
            Map::new()
        })
    };
    let values = if values_text.is_empty() {
        Map::new()
    } else {
        attribute_values(&values_text).unwrap_or_else(|e| {
            p.fail_param(
                ErrorKind::Config,
                "expressionAttributeValues",
                META,
                format!("error parsing expressionAttributeValues: {e}"),
            );
            Map::new()
        })
    };
    let target = aws::parse_target(p);
    let mut query = Map::new();
    query.insert("TableName".into(), Value::String(table_name.clone()));
    query.insert(
        "KeyConditionExpression".into(),
        Value::String(key_condition),
    );
    query.insert("ExpressionAttributeNames".into(), Value::Object(names));
    query.insert("ExpressionAttributeValues".into(), Value::Object(values));
    if let Some(f) = filter {
        query.insert("FilterExpression".into(), Value::String(f));
    }
    if let Some(i) = index_name {
        query.insert("IndexName".into(), Value::String(i));
    }
    // Only the count comes back; DynamoDB counts the same page KEDA's full Query reads.
    query.insert("Select".into(), Value::String("COUNT".into()));
    Config {
        table_name,
        query: Value::Object(query),
        target_value,
        activation_target_value,
        target,
    }
}

/// `expressionAttributeNames`: a JSON object of strings, not empty (KEDA's json2Map).
fn attribute_names(text: &str) -> Result<Map<String, Value>, AttributeError> {
    let map: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| AttributeError::Json(format!("invalid expressionAttributeNames: {e}")))?;
    if map.is_empty() {
        return Err(AttributeError::EmptyNames);
    }
    if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
        return Err(AttributeError::NameNotAString(k.clone()));
    }
    Ok(map)
}

/// `expressionAttributeValues`: a JSON object of DynamoDB attribute values (`{"S": "x"}`,
/// `{"N": "1"}`, `BOOL`, `B`, `L`, `M`, `NULL`), as KEDA's json2DynamoMap reads them, turned into
/// DynamoDB's wire form (`B` holds the text's bytes, sent base64-encoded).
fn attribute_values(text: &str) -> Result<Map<String, Value>, AttributeError> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| AttributeError::Json(e.to_string()))?;
    map.into_iter()
        .map(|(k, v)| attribute_value(&v).map(|a| (k, a)))
        .collect()
}

/// Why `expressionAttributeNames` or `expressionAttributeValues` cannot be sent to DynamoDB.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum AttributeError {
    /// `expressionAttributeNames` is `{}` (KEDA's message).
    #[error("empty map")]
    EmptyNames,
    /// A name that maps to something other than a string.
    #[error("invalid expressionAttributeNames: {0:?} is not a string")]
    NameNotAString(String),
    /// Not a JSON object.
    #[error("{0}")]
    Json(String),
    /// A value that is not an object naming its data type.
    #[error("unsupported data type for attribute value")]
    NotTyped,
    /// An object naming no or several data types (how many).
    #[error("an attribute value names exactly one data type, {0} given")]
    DataTypes(usize),
    /// A data type holding the wrong JSON (the type, the value).
    #[error("invalid expressionAttributeValues: {0} is {1}")]
    Invalid(String, String),
    /// A data type ringscale does not send (KEDA's message; sets such as `SS` included).
    #[error("unsupported data type for attribute value: {0}")]
    Unsupported(String),
}

fn attribute_value(v: &Value) -> Result<Value, AttributeError> {
    let Value::Object(m) = v else {
        return Err(AttributeError::NotTyped);
    };
    let mut entries = m.iter();
    let (Some((data_type, inner)), None) = (entries.next(), entries.next()) else {
        return Err(AttributeError::DataTypes(m.len()));
    };
    let invalid = || AttributeError::Invalid(data_type.clone(), inner.to_string());
    let wire = match (data_type.as_str(), inner) {
        ("S", Value::String(_)) => inner.clone(),
        ("N", Value::String(_)) => inner.clone(),
        ("BOOL", Value::Bool(_)) => inner.clone(),
        ("B", Value::String(s)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        }
        ("L", Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(attribute_value)
                .collect::<Result<_, _>>()?,
        ),
        ("M", Value::Object(fields)) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| attribute_value(v).map(|a| (k.clone(), a)))
                .collect::<Result<_, _>>()?,
        ),
        ("NULL", _) => Value::Bool(true),
        ("S" | "N" | "BOOL" | "B" | "L" | "M", _) => return Err(invalid()),
        (other, _) => return Err(AttributeError::Unsupported(other.to_owned())),
    };
    let mut out = Map::new();
    out.insert(data_type.clone(), wire);
    Ok(Value::Object(out))
}

impl Config {
    pub fn metric_specs(&self, common: &Common) -> Vec<MetricSpec> {
        vec![MetricSpec::External(ExternalMetric::new(
            metric_name(
                common.index,
                &normalize(&format!("aws-dynamodb-{}", self.table_name)),
            ),
            common.metric_type.clone(),
            self.target_value as f64,
        ))]
    }
}

/// A built `aws-dynamodb` trigger.
pub(crate) struct DynamoDbScaler {
    config: Config,
    dynamodb: Service,
}

impl DynamoDbScaler {
    pub fn new(config: Config, sources: &Sources) -> Self {
        let dynamodb = Service::new(sources, &config.target, "dynamodb", Json::V1_0);
        DynamoDbScaler { config, dynamodb }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn poll(&self, common: &Common, metric: &str) -> Result<Poll, crate::ScalerError> {
        let answer = self
            .dynamodb
            .call("DynamoDB_20120810.Query", &self.config.query)
            .await
            .map_err(|e| common.error(e.kind, e.message))?;
        let count = answer
            .get("Count")
            .and_then(Value::as_i64)
            .ok_or_else(|| common.source_error("no Count in DynamoDB's Query answer"))?;
        Ok(Poll::one(
            common.name(metric),
            count as f64,
            count > self.config.activation_target_value,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_become_dynamodb_wire_values() {
        let v = attribute_values(
            r#"{":s": {"S": "open"}, ":n": {"N": "3"}, ":b": {"B": "hi"}, ":t": {"BOOL": true},
                ":l": {"L": [{"S": "a"}, {"N": "1"}]}, ":m": {"M": {"k": {"NULL": true}}}}"#,
        )
        .unwrap();
        assert_eq!(v[":s"], serde_json::json!({"S": "open"}));
        assert_eq!(v[":n"], serde_json::json!({"N": "3"}));
        assert_eq!(v[":b"], serde_json::json!({"B": "aGk="}));
        assert_eq!(v[":t"], serde_json::json!({"BOOL": true}));
        assert_eq!(v[":l"], serde_json::json!({"L": [{"S": "a"}, {"N": "1"}]}));
        assert_eq!(v[":m"], serde_json::json!({"M": {"k": {"NULL": true}}}));
    }

    #[test]
    fn malformed_attribute_values_and_names_are_refused() {
        // KEDA: a number given as a JSON number is invalid ("N" takes a string).
        assert!(attribute_values(r#"{":n": {"N": 3}}"#).is_err());
        assert!(
            attribute_values(r#"{":x": {"SS": ["a"]}}"#).unwrap_err()
                == AttributeError::Unsupported("SS".into())
        );
        assert!(attribute_values(r#"{":x": "open"}"#).is_err());
        assert!(attribute_values(r#"{":x": {}}"#).is_err());
        assert!(attribute_values("not json").is_err());
        assert!(attribute_values("{}").unwrap().is_empty());
        assert_eq!(attribute_names("{}"), Err(AttributeError::EmptyNames));
        assert_eq!(AttributeError::EmptyNames.to_string(), "empty map");
        assert!(attribute_names(r##"{"#k": 1}"##).is_err());
        assert!(attribute_names(r##"{"#k": "status"}"##).is_ok());
    }
}
