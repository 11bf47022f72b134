//! Checks of `advanced.scalingModifiers.formula`, written in the expr language (as in KEDA).
//!
//! KEDA compiles the formula against the named triggers and runs it once with every trigger at
//! -1. ringscale does the same with the `expr-lang` crate and, because a run skips the untaken
//! side of `??` and `?:`, also scans the formula for every variable it names.

use std::collections::BTreeSet;

/// Formulas longer than this are rejected before parsing.
pub const MAX_FORMULA_LEN: usize = 4096;
/// Deeper bracket nesting than this is rejected before parsing (the parser recurses).
pub const MAX_NESTING: usize = 64;

const KEYWORDS: &[&str] = &[
    "true",
    "false",
    "nil",
    "and",
    "or",
    "not",
    "in",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "let",
    "if",
    "else",
];

/// A formula problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormulaError {
    /// Too long or too deeply nested to parse safely.
    TooComplex(String),
    /// The formula does not parse.
    Syntax(String),
    /// The formula names variables that are not trigger names.
    UnknownNames(Vec<String>),
    /// Running it with every trigger at -1 fails.
    Evaluation(String),
    /// The result is not a number.
    NotANumber(String),
}

impl std::fmt::Display for FormulaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooComplex(why) => write!(f, "formula is too complex to parse: {why}"),
            Self::Syntax(err) => write!(f, "formula does not parse: {err}"),
            Self::UnknownNames(names) => write!(
                f,
                "formula uses {}, which {} not the name of a trigger (only named triggers other than cpu and memory can be used)",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ),
            Self::Evaluation(err) => {
                write!(f, "formula fails when run with every trigger at -1: {err}")
            }
            Self::NotANumber(got) => write!(f, "formula must return a number, returned {got}"),
        }
    }
}

/// Checks a formula against the trigger names it may use; returns every problem found.
pub fn check(formula: &str, trigger_names: &[&str]) -> Vec<FormulaError> {
    if let Err(err) = check_size(formula) {
        return vec![err];
    }
    let program = match expr::compile(formula) {
        Ok(program) => program,
        Err(err) => return vec![FormulaError::Syntax(one_line(&err.to_string()))],
    };
    let mut errors = Vec::new();
    let unknown: Vec<String> = variables(formula)
        .into_iter()
        .filter(|name| !trigger_names.contains(&name.as_str()))
        .collect();
    if !unknown.is_empty() {
        errors.push(FormulaError::UnknownNames(unknown));
        return errors;
    }
    let mut ctx = expr::Context::default();
    for name in trigger_names {
        ctx.insert(*name, -1.0);
    }
    match expr::run(&program, &ctx) {
        Ok(expr::Value::Integer(_) | expr::Value::Float(_)) => {}
        Ok(other) => errors.push(FormulaError::NotANumber(one_line(&other.to_string()))),
        Err(err) => errors.push(FormulaError::Evaluation(one_line(&err.to_string()))),
    }
    errors
}

fn check_size(formula: &str) -> Result<(), FormulaError> {
    if formula.len() > MAX_FORMULA_LEN {
        return Err(FormulaError::TooComplex(format!(
            "longer than {MAX_FORMULA_LEN} bytes"
        )));
    }
    let mut depth = 0usize;
    for c in formula.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(FormulaError::TooComplex(format!(
                        "brackets nested deeper than {MAX_NESTING}"
                    )));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq)]
enum Token<'a> {
    Ident(&'a str),
    Punct(char),
    Other,
}

/// The free variables a formula names: identifiers that are not keywords, function names,
/// member names, map keys or `let` bindings.
pub fn variables(formula: &str) -> BTreeSet<String> {
    let tokens = tokenize(formula);
    let mut bound: BTreeSet<&str> = BTreeSet::new();
    // Per open bracket: its kind and how many `?` of a ternary wait for their `:`.
    let mut frames: Vec<(char, usize)> = vec![('(', 0)];
    let mut found = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| tokens.get(j)).copied();
        let next = tokens.get(i + 1).copied();
        match *token {
            Token::Punct(c @ ('(' | '[' | '{')) => frames.push((c, 0)),
            Token::Punct(')' | ']' | '}') if frames.len() > 1 => {
                frames.pop();
            }
            Token::Punct('?') => {
                if let Some(frame) = frames.last_mut() {
                    frame.1 += 1;
                }
            }
            Token::Punct(':') => {
                if let Some(frame) = frames.last_mut() {
                    frame.1 = frame.1.saturating_sub(1);
                }
            }
            Token::Ident(name) => {
                if prev == Some(Token::Ident("let")) {
                    bound.insert(name);
                    continue;
                }
                let member = prev == Some(Token::Punct('.'));
                let call = next == Some(Token::Punct('('));
                let map_key = next == Some(Token::Punct(':'))
                    && frames
                        .last()
                        .is_some_and(|(kind, pending)| *kind == '{' && *pending == 0);
                let special = name.starts_with('$') || name.starts_with('#');
                if !member
                    && !call
                    && !map_key
                    && !special
                    && !KEYWORDS.contains(&name)
                    && !bound.contains(name)
                {
                    found.insert(name.to_owned());
                }
            }
            _ => {}
        }
    }
    found
}

fn tokenize(formula: &str) -> Vec<Token<'_>> {
    let bytes = formula.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if b == b'"' || b == b'\'' || b == b'`' {
            i = skip_string(bytes, i);
            tokens.push(Token::Other);
        } else if b.is_ascii_digit() {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                // `1..3` is a range, not a number with two dots.
                if bytes[i] == b'.' && bytes.get(i + 1) == Some(&b'.') {
                    break;
                }
                i += 1;
            }
            tokens.push(Token::Other);
        } else if b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b == b'#' {
            let start = i;
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token::Ident(&formula[start..i]));
        } else if b == b'?' && bytes.get(i + 1) == Some(&b'?') {
            i += 2;
            tokens.push(Token::Other);
        } else if b == b'?' && bytes.get(i + 1) == Some(&b'.') {
            i += 2;
            tokens.push(Token::Punct('.'));
        } else if b == b'.' && bytes.get(i + 1) == Some(&b'.') {
            i += 2;
            tokens.push(Token::Other);
        } else if b.is_ascii() {
            i += 1;
            tokens.push(Token::Punct(char::from(b)));
        } else {
            // Skip a non-ASCII character as a whole.
            let width = formula[i..].chars().next().map_or(1, char::len_utf8);
            i += width;
            tokens.push(Token::Other);
        }
    }
    tokens
}

fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(formula: &str) -> Vec<String> {
        variables(formula).into_iter().collect()
    }

    #[test]
    fn variables_skip_functions_members_strings_and_keywords() {
        assert_eq!(vars("(queue + backlog) / 2"), ["backlog", "queue"]);
        assert_eq!(vars("max(queue, 2) * abs(lag)"), ["lag", "queue"]);
        assert_eq!(vars("a > 5 ? b : c"), ["a", "b", "c"]);
        assert_eq!(vars("fast ?? slow ?? 8"), ["fast", "slow"]);
        assert_eq!(vars("x.field + 'not_a_var' + \"nor_this\""), ["x"]);
        assert_eq!(vars("let base = q * 2; base + r"), ["q", "r"]);
        assert_eq!(vars("{k: v}.k"), ["v"]);
        assert_eq!(vars("a == nil and not b"), ["a", "b"]);
    }

    #[test]
    fn a_valid_formula_has_no_problems() {
        assert!(check("float(queue + backlog) / 2", &["queue", "backlog"]).is_empty());
        assert!(check("queue > 10 ? queue : backlog", &["queue", "backlog"]).is_empty());
        assert!(check("queue ?? 8", &["queue"]).is_empty());
    }

    #[test]
    fn unknown_names_are_reported_even_behind_short_circuits() {
        assert_eq!(
            check("queue ?? missing", &["queue"]),
            vec![FormulaError::UnknownNames(vec!["missing".into()])]
        );
        assert_eq!(
            check("queue > 0 ? queue : other", &["queue"]),
            vec![FormulaError::UnknownNames(vec!["other".into()])]
        );
    }

    #[test]
    fn syntax_errors_and_non_numbers_are_reported() {
        assert!(matches!(
            check("queue +* 2", &["queue"]).as_slice(),
            [FormulaError::Syntax(_)]
        ));
        assert!(matches!(
            check("queue > 2", &["queue"]).as_slice(),
            [FormulaError::NotANumber(_)]
        ));
    }

    #[test]
    fn hostile_formulas_are_refused_before_parsing() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(
            check(&deep, &[]).as_slice(),
            [FormulaError::TooComplex(_)]
        ));
        let long = "a + ".repeat(2_000) + "a";
        assert!(matches!(
            check(&long, &["a"]).as_slice(),
            [FormulaError::TooComplex(_)]
        ));
    }
}
