//! Building a client for a [`StoreUrl`]: credentials from each cloud's
//! environment, and for S3 the `region` and `endpoint_url` keys.
//!
//! S3 credentials come from the AWS SDK's default chain (see `aws_chain`):
//! environment variables, the shared config and credentials files
//! (`AWS_PROFILE`), web identity, the ECS container or EKS Pod Identity
//! endpoint, then EC2 instance metadata; temporary credentials are refreshed
//! before they expire.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

use crate::url::{Scheme, StoreUrl};

/// The settings of a store beyond its URL (S3 only; GCS and Azure take
/// theirs from the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// The S3 region; else `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// An S3-compatible endpoint (MinIO, moto, LocalStack). An `http://`
    /// endpoint is addressed path-style over plain HTTP; an `https://` one
    /// virtual-hosted style (`https://<bucket>.<host>`).
    pub endpoint_url: Option<String>,
}

impl StoreOptions {
    /// Checks the options against the URL they go with; pure. Errors name
    /// the key, relative to the section.
    ///
    /// # Errors
    /// `(key, reason)` of the first problem.
    pub fn validate(&self, url: &StoreUrl) -> Result<(), (&'static str, String)> {
        if url.scheme != Scheme::S3 {
            for (key, set) in [
                ("region", self.region.is_some()),
                ("endpoint_url", self.endpoint_url.is_some()),
            ] {
                if set {
                    return Err((key, "applies only to an s3:// path".to_owned()));
                }
            }
        }
        if let Some(region) = &self.region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(("region", format!("`{region}` is not a region name")));
        }
        if let Some(endpoint) = &self.endpoint_url {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .ok_or_else(|| {
                    (
                        "endpoint_url",
                        format!("`{endpoint}` must start with http:// or https://"),
                    )
                })?;
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                return Err((
                    "endpoint_url",
                    format!("`{endpoint}` must be a scheme and a host (and port), nothing more"),
                ));
            }
        }
        Ok(())
    }
}

/// Builds the client. Nothing is sent yet.
///
/// # Errors
/// When object_store refuses the settings (a malformed endpoint, missing
/// Azure account name).
pub(crate) fn build(
    url: &StoreUrl,
    options: &StoreOptions,
    chain: Option<crate::aws_chain::Chain>,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    crate::tls::install_tls_provider();
    Ok(match url.scheme {
        Scheme::S3 => Arc::new(s3_builder(url, options, chain).build()?),
        Scheme::Gcs => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .build()?,
        ),
        Scheme::Azure => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .build()?,
        ),
    })
}

/// The S3 client's settings: credentials and region from the chain, the
/// endpoint's addressing, and create-if-absent copies done as a one-part
/// upload copy completed with `If-None-Match: *` (what a fenced upload
/// commits with; S3 has honoured it since 2024) unless
/// `AWS_COPY_IF_NOT_EXISTS` names another way (an S3-compatible store's
/// own header).
fn s3_builder(
    url: &StoreUrl,
    options: &StoreOptions,
    chain: Option<crate::aws_chain::Chain>,
) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
    // The SDK's chain (profiles included) supplies the credentials,
    // and the region when neither the config nor the environment
    // gives one.
    if let Some(chain) = chain {
        b = b.with_credentials(chain.credentials);
        if options.region.is_none()
            && std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && let Some(region) = chain.region
        {
            b = b.with_region(region);
        }
    }
    if let Some(region) = &options.region {
        b = b.with_region(region);
    }
    b = match options.endpoint_url.as_deref() {
        Some(endpoint) if endpoint.starts_with("http://") => b
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false),
        Some(endpoint) => {
            // object_store takes a virtual-hosted endpoint with the
            // bucket already in it.
            let host = endpoint
                .trim_start_matches("https://")
                .trim_end_matches('/');
            b.with_endpoint(format!("https://{}.{host}", url.bucket))
                .with_allow_http(false)
                .with_virtual_hosted_style_request(true)
        }
        None => b
            .with_allow_http(false)
            .with_virtual_hosted_style_request(true),
    };
    // `from_env` has read `AWS_COPY_IF_NOT_EXISTS` when it is set.
    if b.get_config_value(&AmazonS3ConfigKey::CopyIfNotExists)
        .is_some()
    {
        b
    } else {
        b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, region: Option<&str>, endpoint: Option<&str>) -> Result<(), &'static str> {
        let options = StoreOptions {
            region: region.map(str::to_owned),
            endpoint_url: endpoint.map(str::to_owned),
        };
        options
            .validate(&StoreUrl::parse(url).unwrap())
            .map_err(|(key, _)| key)
    }

    #[test]
    fn options_are_checked_against_the_store() {
        assert_eq!(
            check("s3://b/p", Some("eu-west-1"), Some("http://127.0.0.1:9000")),
            Ok(())
        );
        assert_eq!(
            check("s3://b/p", None, Some("https://minio.internal:9000/")),
            Ok(())
        );
        assert_eq!(check("gs://b/p", Some("eu-west-1"), None), Err("region"));
        assert_eq!(
            check("az://c/p", None, Some("http://x")),
            Err("endpoint_url")
        );
        assert_eq!(check("s3://b", Some("eu west"), None), Err("region"));
        assert_eq!(
            check("s3://b", None, Some("127.0.0.1:9000")),
            Err("endpoint_url")
        );
        assert_eq!(
            check("s3://b", None, Some("http://h/path")),
            Err("endpoint_url")
        );
    }

    /// Fenced uploads commit with a create-if-absent copy; on S3 that is a
    /// one-part upload copy completed with `If-None-Match: *`.
    #[test]
    fn s3_copies_create_if_absent_by_a_conditional_multipart_completion() {
        let url = StoreUrl::parse("s3://lake/cdc").unwrap();
        let b = s3_builder(&url, &StoreOptions::default(), None);
        assert_eq!(
            b.get_config_value(&AmazonS3ConfigKey::CopyIfNotExists)
                .as_deref(),
            Some("multipart")
        );
    }

    #[test]
    fn an_s3_client_builds_without_sending_anything() {
        let url = StoreUrl::parse("s3://lake/cdc").unwrap();
        for endpoint in [
            None,
            Some("http://127.0.0.1:9"),
            Some("https://minio.example"),
        ] {
            let options = StoreOptions {
                region: Some("eu-west-1".into()),
                endpoint_url: endpoint.map(str::to_owned),
            };
            build(&url, &options, None).unwrap();
        }
    }
}
