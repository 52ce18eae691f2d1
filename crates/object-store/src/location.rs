//! [`Location`]: a `path` key that is a local directory or an object-store
//! URL, with the store options that go with it.

use std::path::PathBuf;

use crate::connect::StoreOptions;
use crate::url::{StoreUrl, looks_like_url};

/// Where a dataset or a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local disk.
    Local(PathBuf),
    /// A prefix in a bucket.
    Remote {
        /// The bucket and prefix.
        url: StoreUrl,
        /// Region and endpoint (S3).
        options: StoreOptions,
    },
}

impl Location {
    /// Reads a `path` value and the `region` / `endpoint_url` keys beside
    /// it; pure. Errors name the key, relative to the section.
    ///
    /// # Errors
    /// `(key, reason)`: an empty path, a malformed URL, or store options
    /// given for a local path or a store they do not apply to.
    pub fn parse(path: &str, options: StoreOptions) -> Result<Location, (&'static str, String)> {
        if path.is_empty() {
            return Err(("path", "must not be empty".to_owned()));
        }
        if !looks_like_url(path) {
            for (key, set) in [
                ("region", options.region.is_some()),
                ("endpoint_url", options.endpoint_url.is_some()),
            ] {
                if set {
                    return Err((key, "applies only to an s3:// path".to_owned()));
                }
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        let url = StoreUrl::parse(path).map_err(|reason| ("path", reason))?;
        options.validate(&url)?;
        Ok(Location::Remote { url, options })
    }

    /// The location, for people.
    pub fn describe(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::Remote { url, .. } => url.to_string(),
        }
    }

    /// `segment` below this location.
    pub fn join(&self, segment: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(segment)),
            Location::Remote { url, options } => Location::Remote {
                url: url.join(segment),
                options: options.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str, region: Option<&str>) -> Result<Location, &'static str> {
        let options = StoreOptions {
            region: region.map(str::to_owned),
            endpoint_url: None,
        };
        Location::parse(path, options).map_err(|(key, _)| key)
    }

    #[test]
    fn paths_and_urls_are_told_apart() {
        assert_eq!(
            parse("out/parquet", None),
            Ok(Location::Local("out/parquet".into()))
        );
        assert!(matches!(
            parse("s3://lake/cdc", Some("eu-west-1")),
            Ok(Location::Remote { .. })
        ));
        assert_eq!(parse("out/parquet", Some("eu-west-1")), Err("region"));
        assert_eq!(parse("", None), Err("path"));
        assert_eq!(parse("s4://lake", None), Err("path"));
        assert_eq!(
            parse("s3://lake", None).unwrap().join("_gaps").describe(),
            "s3://lake/_gaps"
        );
    }
}
