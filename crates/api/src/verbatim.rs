//! Values KEDA passes through to Kubernetes unchanged (an HPA `behavior`, a ScaledJob's
//! `jobTargetRef`).
//!
//! They are stored as the JSON the user wrote, so that fields newer than the Kubernetes version
//! ringscale was built against survive a read-modify-write, while the CRD schema is the
//! Kubernetes type's own (as KEDA's CRD embeds it).

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object kept verbatim, whose schema and typed view are those of `T`.
pub struct Verbatim<T> {
    raw: Map<String, Value>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Verbatim<T> {
    /// Wraps a JSON object.
    pub fn new(raw: Map<String, Value>) -> Self {
        Self {
            raw,
            _type: PhantomData,
        }
    }

    /// The JSON object as written.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// Mutable access to the JSON object.
    pub fn raw_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.raw
    }
}

impl<T: DeserializeOwned> Verbatim<T> {
    /// Decodes the value as the Kubernetes type it stands for.
    pub fn typed(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.raw.clone()))
    }
}

impl<T: Serialize> Verbatim<T> {
    /// Encodes a Kubernetes value.
    pub fn from_typed(value: &T) -> Result<Self, serde_json::Error> {
        match serde_json::to_value(value)? {
            Value::Object(raw) => Ok(Self::new(raw)),
            _ => Err(serde::ser::Error::custom(
                "value does not serialize to a JSON object",
            )),
        }
    }
}

impl<T> Clone for Verbatim<T> {
    fn clone(&self) -> Self {
        Self::new(self.raw.clone())
    }
}

impl<T> Default for Verbatim<T> {
    fn default() -> Self {
        Self::new(Map::new())
    }
}

impl<T> PartialEq for Verbatim<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<T> std::fmt::Debug for Verbatim<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Verbatim").field(&self.raw).finish()
    }
}

impl<T> Serialize for Verbatim<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Verbatim<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Self::new)
    }
}

impl<T: JsonSchema> JsonSchema for Verbatim<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// An autoscaling/v2 `HorizontalPodAutoscalerBehavior`, passed to the HPA verbatim.
pub type HpaBehavior = Verbatim<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior>;

/// A batch/v1 `JobSpec`, used verbatim as the template of the Jobs a ScaledJob creates.
pub type JobTemplate = Verbatim<k8s_openapi::api::batch::v1::JobSpec>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_unknown_to_the_typed_view_survive_a_round_trip() {
        let json = serde_json::json!({
            "scaleDown": {"stabilizationWindowSeconds": 60, "tolerance": "0.05", "futureField": 1}
        });
        let behavior: HpaBehavior = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&behavior).unwrap(), json);
        let typed = behavior.typed().unwrap();
        assert_eq!(
            typed
                .scale_down
                .and_then(|r| r.stabilization_window_seconds),
            Some(60)
        );
    }
}
