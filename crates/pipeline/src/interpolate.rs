//! Environment variables in configuration values, so that secrets and
//! per-environment settings need not be written into the file.
//!
//! Every string value of the parsed TOML tree is expanded (keys are not):
//!
//! | Written            | Becomes                                                        |
//! |--------------------|----------------------------------------------------------------|
//! | `${VAR}`           | the value of `VAR`; an error when `VAR` is unset (empty is fine) |
//! | `${VAR:-default}`  | the value of `VAR`, or `default` when `VAR` is unset *or empty* |
//! | `${VAR:?message}`  | the value of `VAR`; an error with `message` when unset or empty |
//! | `$$`               | a literal `$`                                                  |
//! | `$` before anything but `{` or `$` | itself (`cost: $5` stays as written)           |
//!
//! The defaults and `:?` behave as in the POSIX shell. An unset `${VAR}` is
//! an error rather than an empty string because a silently empty broker list
//! or password is harder to diagnose than a message at start-up.
//!
//! Variable names are `[A-Za-z_][A-Za-z0-9_]*`. A default or message is
//! literal text up to the first `}`: it is not expanded itself, so it cannot
//! contain `}` or another `${`. Values taken from the environment are
//! inserted as they are, never expanded again. An unterminated `${` is an
//! error.
//!
//! Errors name the dotted key path in the style of the other configuration
//! errors (`sinks.kafka.schema_registry_password`, `source.tables[0]`) and
//! say why. They never contain a variable's value or the text of the value
//! being expanded, either of which may be a secret: only variable names,
//! `:?` messages and character positions.

use toml::Value;

/// A value that could not be expanded: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub(crate) struct InterpolateError {
    /// Dotted path of the key whose value could not be expanded.
    pub(crate) key: String,
    /// What is wrong (never includes a variable's value).
    pub(crate) reason: String,
}

/// Expands every string in `value` in place, looking variables up with
/// `env` (`&|name| std::env::var(name).ok()` for the process environment).
///
/// # Errors
/// The first value that cannot be expanded (in key order), naming its key.
pub(crate) fn interpolate(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolateError> {
    walk(value, "", env)
}

fn walk(
    value: &mut Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolateError> {
    match value {
        Value::String(text) => {
            if let Some(expanded) = expand(text, env).map_err(|reason| InterpolateError {
                key: if key.is_empty() {
                    "(top level)".to_owned()
                } else {
                    key.to_owned()
                },
                reason,
            })? {
                *text = expanded;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{key}[{i}]"), env)?;
            }
        }
        Value::Table(table) => {
            for (name, item) in table.iter_mut() {
                let child = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                walk(item, &child, env)?;
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
    Ok(())
}

/// Expands one string: `Ok(None)` when it has no `$` and stays as it is.
/// The error is the reason alone; the caller adds the key.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if !text.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            // 1-based character position of this `${`, for messages.
            let at = text[..text.len() - rest.len() + dollar].chars().count() + 1;
            let Some(close) = body_and_tail.find('}') else {
                return Err(format!(
                    "unterminated `${{` at character {at} (write `$$` for a literal dollar)"
                ));
            };
            out.push_str(&substitute(&body_and_tail[..close], at, env)?);
            rest = &body_and_tail[close + 1..];
        } else {
            // A lone `$`: kept, so prices and regexes need no escaping.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// The replacement for `${body}`, where `body` is what lies between the
/// braces and `at` is the position of the `${` in the value.
fn substitute(
    body: &str,
    at: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let name_len = variable_name_len(body);
    if name_len == 0 {
        return Err(format!(
            "`${{` at character {at} is not followed by a variable name \
             (a letter or `_`, then letters, digits or `_`)"
        ));
    }
    let (name, operator) = body.split_at(name_len);
    if operator.is_empty() {
        return env(name).ok_or_else(|| {
            format!(
                "environment variable {name} is not set \
                 (write `${{{name}:-default}}` to give a default)"
            )
        });
    }
    let literal = |text: &str| {
        if text.contains("${") {
            Err(format!(
                "`${{{name}` at character {at}: a default or message cannot contain another `${{`"
            ))
        } else {
            Ok(())
        }
    };
    if let Some(default) = operator.strip_prefix(":-") {
        literal(default)?;
        return Ok(env(name)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned()));
    }
    if let Some(message) = operator.strip_prefix(":?") {
        literal(message)?;
        let problem = match env(name) {
            Some(value) if !value.is_empty() => return Ok(value),
            Some(_) => "is empty",
            None => "is not set",
        };
        return Err(if message.is_empty() {
            format!("environment variable {name} {problem}")
        } else {
            format!("environment variable {name} {problem}: {message}")
        });
    }
    Err(format!(
        "`${{{name}` at character {at} must be followed by `}}`, `:-default}}` or `:?message}}`"
    ))
}

/// Length in bytes of the variable name `body` starts with (0 if none).
fn variable_name_len(body: &str) -> usize {
    let bytes = body.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => bytes
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment with `PASSWORD=hunter2`, `EMPTY=` and `HOST=db.local`.
    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("hunter2".to_owned()),
            "EMPTY" => Some(String::new()),
            "HOST" => Some("db.local".to_owned()),
            "TEMPLATE" => Some("${HOST}".to_owned()),
            _ => None,
        }
    }

    fn one(text: &str) -> Result<String, String> {
        expand(text, &env).map(|expanded| expanded.unwrap_or_else(|| text.to_owned()))
    }

    fn parse(text: &str) -> Value {
        Value::Table(toml::from_str(text).unwrap())
    }

    #[test]
    fn text_without_a_dollar_is_untouched() {
        assert_eq!(expand("plain text {}", &env), Ok(None));
        assert_eq!(one(""), Ok(String::new()));
    }

    #[test]
    fn plain_variables() {
        assert_eq!(one("${HOST}"), Ok("db.local".into()));
        assert_eq!(
            one("http://${HOST}:8081/x"),
            Ok("http://db.local:8081/x".into())
        );
        assert_eq!(one("${HOST}${HOST}"), Ok("db.localdb.local".into()));
        assert_eq!(one("é${HOST}é"), Ok("édb.localé".into()));
        // Set but empty is a value like any other.
        assert_eq!(one("[${EMPTY}]"), Ok("[]".into()));
    }

    #[test]
    fn an_unset_plain_variable_is_an_error_suggesting_a_default() {
        assert_eq!(
            one("${NOPE}"),
            Err(
                "environment variable NOPE is not set (write `${NOPE:-default}` to give a default)"
                    .into()
            )
        );
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(one("${NOPE:-9092}"), Ok("9092".into()));
        assert_eq!(one("${EMPTY:-9092}"), Ok("9092".into()));
        assert_eq!(one("${HOST:-localhost}"), Ok("db.local".into()));
        assert_eq!(one("${NOPE:-}"), Ok(String::new()));
        // A default is literal: `$`, `:` and spaces included.
        assert_eq!(one("${NOPE:-a $b: c}"), Ok("a $b: c".into()));
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        assert_eq!(one("${PASSWORD:?set the password}"), Ok("hunter2".into()));
        assert_eq!(
            one("${NOPE:?set the registry password}"),
            Err("environment variable NOPE is not set: set the registry password".into())
        );
        assert_eq!(
            one("${EMPTY:?set it}"),
            Err("environment variable EMPTY is empty: set it".into())
        );
        assert_eq!(
            one("${NOPE:?}"),
            Err("environment variable NOPE is not set".into())
        );
    }

    #[test]
    fn dollars_that_are_not_references_are_kept_or_unescaped() {
        assert_eq!(one("$$"), Ok("$".into()));
        assert_eq!(one("$${HOST}"), Ok("${HOST}".into()));
        assert_eq!(one("$$$${HOST}"), Ok("$${HOST}".into()));
        assert_eq!(one("$$${HOST}"), Ok("$db.local".into()));
        assert_eq!(one("cost $5"), Ok("cost $5".into()));
        assert_eq!(one("ends with $"), Ok("ends with $".into()));
        assert_eq!(one("^a$|b$"), Ok("^a$|b$".into()));
        assert_eq!(one("$HOST"), Ok("$HOST".into()));
    }

    #[test]
    fn values_from_the_environment_are_not_expanded_again() {
        assert_eq!(one("${TEMPLATE}"), Ok("${HOST}".into()));
    }

    #[test]
    fn malformed_references_are_errors_with_a_position() {
        assert_eq!(
            one("abc${HOST"),
            Err("unterminated `${` at character 4 (write `$$` for a literal dollar)".into())
        );
        assert_eq!(
            one("é${"),
            Err("unterminated `${` at character 2 (write `$$` for a literal dollar)".into())
        );
        let no_name =
            "is not followed by a variable name (a letter or `_`, then letters, digits or `_`)";
        assert_eq!(one("${}"), Err(format!("`${{` at character 1 {no_name}")));
        assert_eq!(
            one("x${1A}"),
            Err(format!("`${{` at character 2 {no_name}"))
        );
        assert_eq!(one("${-x}"), Err(format!("`${{` at character 1 {no_name}")));
        assert_eq!(
            one("${HOST-x}"),
            Err(
                "`${HOST` at character 1 must be followed by `}`, `:-default}` or `:?message}`"
                    .into()
            )
        );
        assert_eq!(
            one("${HOST x}"),
            Err(
                "`${HOST` at character 1 must be followed by `}`, `:-default}` or `:?message}`"
                    .into()
            )
        );
        assert_eq!(
            one("${NOPE:-${HOST}}"),
            Err("`${NOPE` at character 1: a default or message cannot contain another `${`".into())
        );
    }

    #[test]
    fn names_follow_the_shell_rules() {
        assert_eq!(variable_name_len("_A1_b}"), 5);
        assert_eq!(variable_name_len("a"), 1);
        assert_eq!(variable_name_len("1a"), 0);
        assert_eq!(variable_name_len(""), 0);
        assert_eq!(variable_name_len("é"), 0);
    }

    #[test]
    fn every_string_in_the_tree_is_expanded_and_nothing_else() {
        let mut value = parse(
            r#"
            top = "${HOST}"
            [source]
            tables = ["${HOST:-x}", "literal", "$$"]
            batch_size = 100
            enabled = true
            [sinks.kafka]
            brokers = "${HOST}:9092"
            "${HOST}" = "keys are not expanded"
            [[sinks.extra]]
            name = "${NOPE:-first}"
            [[sinks.extra]]
            name = "${PASSWORD}"
            "#,
        );
        interpolate(&mut value, &env).unwrap();
        let expected = parse(
            r#"
            top = "db.local"
            [source]
            tables = ["db.local", "literal", "$"]
            batch_size = 100
            enabled = true
            [sinks.kafka]
            brokers = "db.local:9092"
            "${HOST}" = "keys are not expanded"
            [[sinks.extra]]
            name = "first"
            [[sinks.extra]]
            name = "hunter2"
            "#,
        );
        assert_eq!(value, expected);
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let mut value = parse(
            r#"
            [sinks.kafka]
            brokers = "localhost:9092"
            schema_registry_password = "${REGISTRY_PASSWORD:?set the registry password}"
            "#,
        );
        let error = interpolate(&mut value, &env).unwrap_err();
        assert_eq!(error.key, "sinks.kafka.schema_registry_password");
        assert_eq!(
            error.reason,
            "environment variable REGISTRY_PASSWORD is not set: set the registry password"
        );
        assert_eq!(
            error.to_string(),
            "config key `sinks.kafka.schema_registry_password`: environment variable \
             REGISTRY_PASSWORD is not set: set the registry password"
        );

        let mut value = parse(
            r#"
            [source]
            tables = ["orders", "${TABLE}"]
            "#,
        );
        assert_eq!(
            interpolate(&mut value, &env).unwrap_err().key,
            "source.tables[1]"
        );

        let mut value = parse(
            r#"
            [[sinks.extra]]
            name = "ok"
            [[sinks.extra]]
            nested = [["${"]]
            "#,
        );
        assert_eq!(
            interpolate(&mut value, &env).unwrap_err().key,
            "sinks.extra[1].nested[0][0]"
        );

        let mut value = Value::String("${NOPE}".into());
        assert_eq!(
            interpolate(&mut value, &env).unwrap_err().key,
            "(top level)"
        );
    }

    #[test]
    fn errors_never_contain_values_or_the_text_being_expanded() {
        // A set secret before the failure, and a literal secret around it.
        for text in [
            "${PASSWORD}${NOPE}",
            "${PASSWORD}${NOPE:?missing}",
            "literal-s3cret${PASSWORD}${",
            "literal-s3cret${1}",
            "literal-s3cret${PASSWORD-}",
        ] {
            let mut value = parse(&format!("password = {text:?}"));
            let error = interpolate(&mut value, &env).unwrap_err();
            let shown = error.to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
