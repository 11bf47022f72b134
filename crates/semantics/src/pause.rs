//! The pause annotations and `force-activation`, with KEDA's precedence.

use std::collections::BTreeMap;

use ringscale_api::names::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_REPLICAS,
    ANNOTATION_PAUSED_SCALE_IN, ANNOTATION_PAUSED_SCALE_OUT,
};
use ringscale_api::validate::triggers::parse_go_bool;

/// What the annotations ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pause {
    /// `paused-replicas`: scale the target to this count, then hold it (wins over `paused`).
    pub replicas: Option<i32>,
    /// `paused`: stop the scale loop and hold the target where it is.
    pub paused: bool,
    /// `paused-scale-in`: no scaling in (the HPA's scaleDown is disabled, no 1 → 0).
    pub scale_in: bool,
    /// `paused-scale-out`: no scaling out (the HPA's scaleUp is disabled, no 0 → 1).
    pub scale_out: bool,
    /// `force-activation`: every trigger counts as active.
    pub force_activation: bool,
}

impl Pause {
    /// Whether the scale loop is stopped (and the HPA removed).
    pub fn is_full(&self) -> bool {
        self.replicas.is_some() || self.paused
    }

    /// Whether the Paused condition is True.
    pub fn is_paused(&self) -> bool {
        self.is_full() || self.scale_in || self.scale_out
    }
}

/// A flag annotation as KEDA reads it (`getBoolAnnotation`): absent is false; a boolean in Go's
/// `strconv.ParseBool` spelling is itself (`"False"`, `"0"`, `"f"` are false); any other value,
/// even empty or padded with spaces, is true.
fn flag(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    match annotations.get(key) {
        None => false,
        Some(v) => parse_go_bool(v).unwrap_or(true),
    }
}

/// Why the pause annotations cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseError {
    /// `autoscaling.keda.sh/paused-replicas` is not a non-negative integer (the value given).
    PausedReplicas(String),
}

impl std::fmt::Display for PauseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseError::PausedReplicas(v) => write!(
                f,
                "annotation {ANNOTATION_PAUSED_REPLICAS} must be a non-negative integer, got {v:?}"
            ),
        }
    }
}

impl std::error::Error for PauseError {}

/// Reads the annotations. An unparseable `paused-replicas` is an error (the object is not
/// scaled until it is fixed, as KEDA refuses it).
pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Pause, PauseError> {
    let replicas = match annotations.get(ANNOTATION_PAUSED_REPLICAS) {
        None => None,
        Some(v) => match v.trim().parse::<i32>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return Err(PauseError::PausedReplicas(v.clone())),
        },
    };
    let force_activation = flag(annotations, ANNOTATION_FORCE_ACTIVATION);
    Ok(Pause {
        replicas,
        paused: flag(annotations, ANNOTATION_PAUSED),
        scale_in: flag(annotations, ANNOTATION_PAUSED_SCALE_IN),
        scale_out: flag(annotations, ANNOTATION_PAUSED_SCALE_OUT),
        force_activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn flags_read_as_keda_reads_them() {
        assert_eq!(from_annotations(&with(&[])), Ok(Pause::default()));
        assert!(
            from_annotations(&with(&[(ANNOTATION_PAUSED, "true")]))
                .unwrap()
                .paused
        );
        assert!(
            !from_annotations(&with(&[(ANNOTATION_PAUSED, "false")]))
                .unwrap()
                .paused
        );
        // Not a boolean: paused.
        assert!(
            from_annotations(&with(&[(ANNOTATION_PAUSED, "yes please")]))
                .unwrap()
                .paused
        );
        assert!(
            from_annotations(&with(&[(ANNOTATION_PAUSED, "")]))
                .unwrap()
                .paused
        );
        let p = from_annotations(&with(&[
            (ANNOTATION_PAUSED_SCALE_IN, "true"),
            (ANNOTATION_FORCE_ACTIVATION, "true"),
        ]))
        .unwrap();
        assert!(p.scale_in && !p.scale_out && p.force_activation && p.is_paused() && !p.is_full());
    }

    #[test]
    fn flags_take_every_spelling_of_go_parse_bool() {
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            let p = from_annotations(&with(&[
                (ANNOTATION_PAUSED, no),
                (ANNOTATION_PAUSED_SCALE_IN, no),
                (ANNOTATION_PAUSED_SCALE_OUT, no),
                (ANNOTATION_FORCE_ACTIVATION, no),
            ]))
            .unwrap();
            assert_eq!(p, Pause::default(), "{no:?} reads as false");
        }
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            let p = from_annotations(&with(&[(ANNOTATION_PAUSED, yes)])).unwrap();
            assert!(p.paused, "{yes:?} reads as true");
        }
        // Not a Go boolean, so true, for force-activation as for the pause flags.
        for other in ["yes", "FaLsE", " false", "no"] {
            let p = from_annotations(&with(&[
                (ANNOTATION_PAUSED_SCALE_OUT, other),
                (ANNOTATION_FORCE_ACTIVATION, other),
            ]))
            .unwrap();
            assert!(p.scale_out && p.force_activation, "{other:?} reads as true");
        }
    }

    #[test]
    fn paused_replicas_wins_and_must_be_a_count() {
        let p = from_annotations(&with(&[
            (ANNOTATION_PAUSED, "true"),
            (ANNOTATION_PAUSED_REPLICAS, "3"),
        ]))
        .unwrap();
        assert_eq!(p.replicas, Some(3));
        assert!(p.is_full());
        let err = from_annotations(&with(&[(ANNOTATION_PAUSED_REPLICAS, "three")])).unwrap_err();
        assert_eq!(err, PauseError::PausedReplicas("three".into()));
        assert_eq!(
            err.to_string(),
            "annotation autoscaling.keda.sh/paused-replicas must be a non-negative integer, got \"three\""
        );
        assert_eq!(
            from_annotations(&with(&[(ANNOTATION_PAUSED_REPLICAS, "-1")])),
            Err(PauseError::PausedReplicas("-1".into()))
        );
    }
}
