//! What every component's configuration check returns: the key that is wrong
//! and why.
//!
//! Components validate their own section with keys relative to it
//! (`path`, `tables[0]`); the binary places them in the file with
//! [`ConfigError::within`], so a message always names the full dotted key
//! (`source.tables[0]`).

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted path of the key.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same problem, with its key placed under `section`
    /// (`path` within `sinks.parquet` is `sinks.parquet.path`).
    #[must_use]
    pub fn within(mut self, section: &str) -> Self {
        self.key = if self.key.is_empty() {
            section.to_owned()
        } else if self.key.starts_with('[') {
            format!("{section}{}", self.key)
        } else {
            format!("{section}.{}", self.key)
        };
        self
    }
}

/// Checks an AWS endpoint's two keys as every section that has them does:
/// `endpoint_url` an `http://` or `https://` URL, `region` not empty.
///
/// # Errors
/// Naming the key that is wrong.
pub fn check_aws_endpoint(
    endpoint_url: Option<&str>,
    region: Option<&str>,
) -> Result<(), ConfigError> {
    if let Some(url) = endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::new(
            "endpoint_url",
            format!("`{url}` is not an http:// or https:// URL"),
        ));
    }
    if region == Some("") {
        return Err(ConfigError::new("region", "must not be empty"));
    }
    Ok(())
}

/// A secret from the configuration (a password): shown as `***` by `Debug`
/// and `Display`, so it cannot reach a log line or a metric by accident.
/// [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn keys_are_placed_under_their_section() {
        let e = ConfigError::new("tables[0]", "bad").within("source");
        assert_eq!(e.to_string(), "config key `source.tables[0]`: bad");
        assert_eq!(ConfigError::new("", "x").within("sinks").key, "sinks");
        assert_eq!(
            ConfigError::new("path", "x")
                .within("parquet")
                .within("sinks")
                .key,
            "sinks.parquet.path"
        );
    }
}
