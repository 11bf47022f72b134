//! String-valued enums that keep values they do not know.
//!
//! KEDA's CRDs constrain only a few string fields with an OpenAPI `enum`; most (a trigger's
//! `metricType`, a ScaledJob's `scalingStrategy.strategy`, ...) accept any string and KEDA judges
//! them at run time. ringscale must read every object KEDA's CRDs admit, so these types
//! deserialize any string: a value outside the known set becomes `Other(value)`, round-trips
//! unchanged, and is reported by validation instead of making the whole object unreadable.

/// Defines a string enum with an `Other(String)` catch-all, serde as a plain string, and a
/// JSON schema of `type: string` (with an `enum` list when `schema_enum` is given, for the fields
/// whose CRD constrains the value).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal ),+ $(,)?
        }
        $(schema_enum = $schema_enum:literal;)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of ringscale does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// Every value this type knows, in wire spelling.
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];

            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Other(other) => other.as_str(),
                }
            }

            /// Whether the value is one of [`Self::KNOWN`].
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                match value {
                    $( $wire => Self::$variant, )+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::from(value.as_ref()))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[allow(unused_mut)]
                let mut schema = schemars::json_schema!({ "type": "string" });
                $(
                    if $schema_enum {
                        schema.insert("enum".into(), serde_json::json!(Self::KNOWN));
                    }
                )?
                schema
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    string_enum! {
        enum Colour {
            Red = "red",
            Green = "green",
        }
    }

    #[test]
    fn unknown_values_round_trip_unchanged() {
        let parsed: Colour = serde_json::from_str("\"Blue\"").unwrap_or(Colour::Red);
        assert_eq!(parsed, Colour::Other("Blue".into()));
        assert!(!parsed.is_known());
        assert_eq!(
            serde_json::to_string(&parsed).ok().as_deref(),
            Some("\"Blue\"")
        );
    }

    #[test]
    fn known_values_parse_to_their_variant() {
        assert_eq!(Colour::from("green"), Colour::Green);
        assert_eq!(Colour::Green.as_str(), "green");
        assert_eq!(Colour::KNOWN, &["red", "green"]);
    }
}
