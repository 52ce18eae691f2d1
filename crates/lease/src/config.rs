//! `[coordination]`: how several bridge processes share the tables.

use dynamo_cdc_core::ConfigError;
use serde::Deserialize;

/// The defaults of `[coordination]`.
pub mod defaults {
    /// `lease_table`.
    pub const LEASE_TABLE: &str = "dynamo-cdc-leases";
    /// `lease_duration_ms`: long enough that a GC pause or a slow renewal
    /// does not move a table, short enough that a crash does not stall it
    /// for long (a peer takes it over within two durations).
    pub const LEASE_DURATION_MS: u64 = 30_000;
    /// The shortest `lease_duration_ms`: renewals run a third of it apart
    /// and each may take a round trip of its own.
    pub const MIN_LEASE_DURATION_MS: u64 = 3_000;

    pub(super) fn lease_table() -> String {
        LEASE_TABLE.to_owned()
    }
    pub(super) fn lease_duration_ms() -> u64 {
        LEASE_DURATION_MS
    }
}

/// `[coordination]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// The DynamoDB table holding leases and positions (created, on
    /// demand billing, when missing).
    #[serde(default = "defaults::lease_table")]
    pub lease_table: String,
    /// This process's name among the workers; must be unique per process.
    /// Default (also when empty, e.g. `"${HOSTNAME:-}"` with the variable
    /// unset): the host name plus a random suffix.
    pub worker_id: Option<String>,
    /// How long a lease stays valid without renewal.
    #[serde(default = "defaults::lease_duration_ms")]
    pub lease_duration_ms: u64,
    /// AWS region of the lease table; the source's when absent.
    pub region: Option<String>,
    /// Another endpoint for the lease table; the source's when absent.
    pub endpoint_url: Option<String>,
}

impl CoordinationConfig {
    /// Checks the keys; errors name them relative to the section.
    ///
    /// # Errors
    /// The first key whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.lease_table;
        if t.len() < 3
            || t.len() > 255
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ConfigError::new(
                "lease_table",
                format!(
                    "`{t}` is not a DynamoDB table name (3 to 255 letters, digits, `_`, `-` or `.`)"
                ),
            ));
        }
        if let Some(w) = &self.worker_id
            && w.trim().chars().count() > 256
        {
            return Err(ConfigError::new(
                "worker_id",
                "must be at most 256 characters (or left out or empty: the host name plus a \
                 random suffix)",
            ));
        }
        dynamo_cdc_core::check_aws_endpoint(self.endpoint_url.as_deref(), self.region.as_deref())?;
        if !(defaults::MIN_LEASE_DURATION_MS..=3_600_000).contains(&self.lease_duration_ms) {
            return Err(ConfigError::new(
                "lease_duration_ms",
                format!(
                    "{} is out of range: between {} and 3600000 (one hour)",
                    self.lease_duration_ms,
                    defaults::MIN_LEASE_DURATION_MS
                ),
            ));
        }
        Ok(())
    }

    /// The worker id: as configured, else the host name plus a random
    /// suffix (so two processes on one host never share one).
    pub fn worker_id(&self) -> String {
        if let Some(w) = self
            .worker_id
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            return w.to_owned();
        }
        let host = host_name().unwrap_or_else(|| "worker".to_owned());
        format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_duration_ms)
    }
}

/// This host's name (the kernel's, else `HOSTNAME`), when it has one.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> CoordinationConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = parse("");
        assert_eq!(c.lease_table, "dynamo-cdc-leases");
        assert_eq!(c.lease_duration_ms, 30_000);
        c.validate().unwrap();
        assert_ne!(c.worker_id(), c.worker_id(), "a random suffix");
        let e = parse("lease_duration_ms = 100").validate().unwrap_err();
        assert!(e.to_string().contains("lease_duration_ms"), "{e}");
        let e = parse("lease_table = \"a b\"").validate().unwrap_err();
        assert!(e.to_string().contains("lease_table"), "{e}");
        assert_eq!(parse("worker_id = \" w1 \"").worker_id(), "w1");
        let unnamed = parse("worker_id = \"\"");
        unnamed.validate().unwrap();
        assert!(unnamed.worker_id().len() > 7, "the host name plus a suffix");
        assert!(toml::from_str::<CoordinationConfig>("lease_tabel = \"x\"").is_err());
        // Characters, not bytes: 256 of them fit whatever their encoding.
        parse(&format!("worker_id = \"{}\"", "é".repeat(256)))
            .validate()
            .unwrap();
        let e = parse(&format!("worker_id = \"{}\"", "é".repeat(257)))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("worker_id"), "{e}");
        for (text, key) in [
            ("endpoint_url = \"localhost:8000\"", "endpoint_url"),
            ("region = \"\"", "region"),
        ] {
            let e = parse(text).validate().unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }
}
