//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`:
//! which store, which bucket, which prefix. Parsing is pure, so a config's
//! `validate()` can use it without touching the network.

use std::fmt;

/// The kind of object store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores (MinIO, moto, LocalStack).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::S3 => "s3://",
            Scheme::Gcs => "gs://",
            Scheme::Azure => "az://",
        }
    }
}

/// A bucket (or container) and a prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// Which store.
    pub scheme: Scheme,
    /// The bucket (Azure: the container).
    pub bucket: String,
    /// The prefix inside the bucket, without leading or trailing `/`;
    /// empty for the whole bucket.
    pub prefix: String,
}

/// Whether `path` is meant as an object-store URL rather than a local path:
/// it has a `scheme://` in front.
pub fn looks_like_url(path: &str) -> bool {
    path.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.chars().all(char::is_alphanumeric))
}

impl StoreUrl {
    /// `scheme://bucket`: the URL without its prefix.
    pub fn bucket_url(&self) -> String {
        format!("{}{}", self.scheme.prefix(), self.bucket)
    }

    /// Parses `s3://`, `gs://` or `az://` URLs.
    ///
    /// # Errors
    /// A reason, for a config error: an unknown scheme, no bucket, or a
    /// prefix with empty, `.` or `..` segments.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        let (scheme, rest) = [Scheme::S3, Scheme::Gcs, Scheme::Azure]
            .into_iter()
            .find_map(|s| url.strip_prefix(s.prefix()).map(|rest| (s, rest)))
            .ok_or_else(|| {
                format!("`{url}`: object-store URLs start with s3://, gs:// or az://")
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}` names no bucket"));
        }
        if bucket.contains(['?', '#', '@', ':']) {
            return Err(format!("`{url}`: `{bucket}` is not a bucket name"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(format!(
                "`{url}`: the prefix may not hold empty, `.` or `..` segments"
            ));
        }
        Ok(StoreUrl {
            scheme,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The same bucket, with `segment` appended to the prefix.
    pub fn join(&self, segment: &str) -> StoreUrl {
        let prefix = if self.prefix.is_empty() {
            segment.to_owned()
        } else {
            format!("{}/{segment}", self.prefix)
        };
        StoreUrl {
            prefix,
            ..self.clone()
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.scheme.prefix(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        let u = StoreUrl::parse("s3://lake/dynamodb/cdc/").unwrap();
        assert_eq!((u.scheme, u.bucket.as_str()), (Scheme::S3, "lake"));
        assert_eq!(u.prefix, "dynamodb/cdc");
        assert_eq!(u.to_string(), "s3://lake/dynamodb/cdc");
        assert_eq!(u.join("_dead_letter").prefix, "dynamodb/cdc/_dead_letter");
        let u = StoreUrl::parse("gs://lake").unwrap();
        assert_eq!((u.scheme, u.prefix.as_str()), (Scheme::Gcs, ""));
        assert_eq!(u.join("x").to_string(), "gs://lake/x");
        assert_eq!(StoreUrl::parse("az://c/p").unwrap().scheme, Scheme::Azure);
        // Keys hold some characters percent-encoded (see `Objects::path`):
        // the prefix is kept as written.
        let u = StoreUrl::parse("s3://lake/données/cdc~v2").unwrap();
        assert_eq!(u.prefix, "données/cdc~v2");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("ftp://x/y", "start with s3://"),
            ("s3://", "no bucket"),
            ("s3:///p", "no bucket"),
            ("s3://b/a//c", "segments"),
            ("s3://b/../c", "segments"),
            ("s3://user@b/c", "not a bucket"),
        ] {
            let e = StoreUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        assert!(looks_like_url("s3://b"));
        assert!(!looks_like_url("out/parquet"));
        assert!(!looks_like_url("/data/a://b"));
    }
}
