//! `advanced.scalingModifiers`: the formula over named triggers, evaluated into the
//! `composite-metric`, and its activity.

use std::collections::BTreeMap;

/// A compiled formula.
pub struct Formula {
    program: expr::Program,
    text: String,
}

impl std::fmt::Debug for Formula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Formula").field(&self.text).finish()
    }
}

impl Formula {
    /// Compiles a formula (validation has checked names and shape already; this only fails on
    /// syntax).
    pub fn compile(text: &str) -> Result<Formula, FormulaError> {
        if text.len() > ringscale_api::validate::formula::MAX_FORMULA_LEN {
            return Err(FormulaError::TooLong);
        }
        expr::compile(text)
            .map(|program| Formula {
                program,
                text: text.to_owned(),
            })
            .map_err(|e| FormulaError::Parse(e.to_string()))
    }

    /// Runs the formula. Each trigger name maps to its value, or `None` when the trigger failed:
    /// then it is `nil` in the formula (for `??`), as KEDA's `scalingModifiers` fallback does.
    /// `Ok(None)` means the formula returned nil (the caller applies the fallback replicas).
    pub fn evaluate(
        &self,
        values: &BTreeMap<String, Option<f64>>,
    ) -> Result<Option<f64>, FormulaError> {
        let mut ctx = expr::Context::default();
        for (name, value) in values {
            match value {
                Some(v) => ctx.insert(name.as_str(), *v),
                None => ctx.insert(name.as_str(), expr::Value::Nil),
            }
        }
        match expr::run(&self.program, &ctx) {
            Ok(expr::Value::Float(v)) if v.is_finite() => Ok(Some(v)),
            Ok(expr::Value::Float(v)) => Err(FormulaError::NotFinite(v)),
            #[allow(clippy::cast_precision_loss)]
            Ok(expr::Value::Integer(v)) => Ok(Some(v as f64)),
            Ok(expr::Value::Nil) => Ok(None),
            Ok(other) => Err(FormulaError::NotANumber(other.to_string())),
            Err(e) => Err(FormulaError::Failed(e.to_string())),
        }
    }
}

/// Why a `scalingModifiers` formula cannot be compiled or did not give a number. The expression
/// library's own errors are kept as text: its error type is not part of this crate's API.
#[derive(Clone, Debug, PartialEq)]
pub enum FormulaError {
    /// Longer than validation allows.
    TooLong,
    /// Compiling failed (syntax).
    Parse(String),
    /// Running failed (a type error, a missing name).
    Failed(String),
    /// It returned NaN or an infinity.
    NotFinite(f64),
    /// It returned something other than a number or nil (shown as returned).
    NotANumber(String),
}

impl std::fmt::Display for FormulaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormulaError::TooLong => f.write_str("the formula is too long"),
            FormulaError::Parse(e) => write!(f, "the formula does not parse: {e}"),
            FormulaError::Failed(e) => write!(f, "the formula failed: {e}"),
            FormulaError::NotFinite(v) => write!(f, "the formula returned {v}"),
            FormulaError::NotANumber(v) => {
                write!(f, "the formula must return a number, returned {v}")
            }
        }
    }
}

impl std::error::Error for FormulaError {}

/// Whether the composite metric is active: strictly above `activationTarget`.
pub fn composite_active(value: f64, activation_target: f64) -> bool {
    value > activation_target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, Option<f64>)]) -> BTreeMap<String, Option<f64>> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn arithmetic_comparison_ternary_and_functions() {
        let f = Formula::compile("(queue + backlog) / 2").unwrap();
        assert_eq!(
            f.evaluate(&values(&[("queue", Some(10.0)), ("backlog", Some(4.0))])),
            Ok(Some(7.0))
        );
        let f = Formula::compile("queue > 5 ? queue : 0").unwrap();
        assert_eq!(f.evaluate(&values(&[("queue", Some(3.0))])), Ok(Some(0.0)));
        let f = Formula::compile("max(a, b) + min(a, b) + abs(c)").unwrap();
        assert_eq!(
            f.evaluate(&values(&[
                ("a", Some(1.0)),
                ("b", Some(5.0)),
                ("c", Some(-2.0))
            ])),
            Ok(Some(8.0))
        );
    }

    #[test]
    fn a_failing_trigger_is_nil() {
        let f = Formula::compile("queue ?? 7").unwrap();
        assert_eq!(f.evaluate(&values(&[("queue", None)])), Ok(Some(7.0)));
        assert_eq!(f.evaluate(&values(&[("queue", Some(2.0))])), Ok(Some(2.0)));
        // Without `??`, a nil in arithmetic is an error, and a bare nil result is "no value".
        let f = Formula::compile("queue * 2").unwrap();
        assert!(f.evaluate(&values(&[("queue", None)])).is_err());
        let f = Formula::compile("queue").unwrap();
        assert_eq!(f.evaluate(&values(&[("queue", None)])), Ok(None));
    }

    #[test]
    fn activity_is_strict() {
        assert!(!composite_active(0.0, 0.0));
        assert!(composite_active(0.5, 0.0));
        assert!(!composite_active(5.0, 5.0));
    }

    #[test]
    fn non_numbers_and_bad_syntax_are_errors() {
        assert!(matches!(
            Formula::compile("queue +"),
            Err(FormulaError::Parse(_))
        ));
        assert!(matches!(
            Formula::compile(&"a+".repeat(10_000)),
            Err(FormulaError::TooLong)
        ));
        let f = Formula::compile("queue > 1").unwrap();
        let err = f.evaluate(&values(&[("queue", Some(2.0))])).unwrap_err();
        assert_eq!(
            err,
            FormulaError::NotANumber("true".into()),
            "a comparison gives a boolean"
        );
        assert_eq!(
            err.to_string(),
            "the formula must return a number, returned true"
        );
    }
}
