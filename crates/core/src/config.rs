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

#[cfg(test)]
mod tests {
    use super::*;

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
