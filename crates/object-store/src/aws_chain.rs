//! S3 credentials and region from the AWS SDK's default chain, the one the
//! DynamoDB clients use: environment variables, the shared config and
//! credentials files (`AWS_PROFILE`), web identity (EKS service accounts),
//! the ECS and EKS Pod Identity container endpoints, and EC2 instance
//! metadata. object_store's own chain reads no profile files, so the SDK's
//! provider is handed to it instead.
//!
//! Credentials are cached until five minutes before they expire, then asked
//! for again: temporary credentials refresh without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;

/// Refresh this long before credentials expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// What the chain found. Clones share the credential cache.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) credentials: Arc<SdkCredentials>,
    /// The region of the chain (environment, profile, instance metadata).
    pub(crate) region: Option<String>,
}

/// Loads the SDK's default chain (no request is made until credentials are
/// first asked for). A configured `region` is given to it, so the chain
/// does not look for one (off EC2, asking the instance metadata service
/// for it only fails, with a warning).
pub(crate) async fn load(region: Option<&str>) -> Chain {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    let config = loader.load().await;
    Chain {
        credentials: Arc::new(SdkCredentials {
            provider: config.credentials_provider(),
            cached: tokio::sync::Mutex::new(None),
            found_before: &FOUND_BEFORE,
            refresh_failing: AtomicBool::new(false),
        }),
        region: config.region().map(ToString::to_string),
    }
}

/// Whether this process has found credentials before. A chain is loaded
/// anew with each pass of the pipeline, so its providers cannot remember
/// (an instance-metadata provider keeps serving its last credentials
/// through a blip, but only within one chain).
static FOUND_BEFORE: AtomicBool = AtomicBool::new(false);

/// Cached credentials whose refresh failed are used while at least this
/// much of their life is left (a request signed now must still be valid
/// when it arrives, and a long upload's parts after it).
const STILL_USABLE: Duration = Duration::from_secs(30);

/// The SDK's provider, as object_store asks for credentials.
pub(crate) struct SdkCredentials {
    provider: Option<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
    /// See [`FOUND_BEFORE`] (tests give their own).
    found_before: &'static AtomicBool,
    /// A refresh failed and the cached credentials are used meanwhile:
    /// said once, not on every request.
    refresh_failing: AtomicBool,
}

impl std::fmt::Debug for SdkCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdkCredentials")
    }
}

/// object_store's error for a credential problem. The text carries
/// `NoCredentials` when none can be found at all (fatal: waiting does not
/// help); other failures (a metadata endpoint that does not answer) may
/// pass.
fn failed(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: message.into(),
    }
}

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|at| {
                at.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE)
            });
            if fresh {
                return Ok(credential.clone());
            }
        }
        let Some(provider) = &self.provider else {
            return Err(failed(
                "NoCredentials: the AWS credential chain is empty".to_owned(),
            ));
        };
        let found = match provider.provide_credentials().await {
            Ok(found) => found,
            Err(e) => {
                // Refreshed ahead of expiry: credentials that still hold
                // are used while they last, and the next request asks again,
                // rather than failing requests (and the run's pass, which
                // reads again everything since its last commit) over a
                // throttled or briefly absent credential source.
                if let Some((credential, Some(at))) = cached.as_ref()
                    && at
                        .duration_since(SystemTime::now())
                        .is_ok_and(|left| left > STILL_USABLE)
                {
                    if !self.refresh_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "cannot refresh the AWS credentials for the bucket; the current ones \
                             are used while they last, and asked for again on the next requests"
                        );
                    }
                    return Ok(credential.clone());
                }
                return Err(self.no_credentials(e));
            }
        };
        if self.refresh_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the AWS credentials for the bucket are refreshed again");
        }
        self.found_before.store(true, Ordering::Relaxed);
        let credential = Arc::new(AwsCredential {
            key_id: found.access_key_id().to_owned(),
            secret_key: found.secret_access_key().to_owned(),
            token: found.session_token().map(str::to_owned),
        });
        *cached = Some((credential.clone(), found.expiry()));
        Ok(credential)
    }
}

impl SdkCredentials {
    /// object_store's error for credentials that could not be had.
    fn no_credentials(&self, e: CredentialsError) -> object_store::Error {
        match e {
            // Where credentials were found before, none now is a source
            // that did not answer this time (instance metadata during a
            // blip): it may pass, and the run pauses instead of stopping
            // with a credentials error.
            CredentialsError::CredentialsNotLoaded(_)
                if !self.found_before.load(Ordering::Relaxed) =>
            {
                failed(format!(
                    "NoCredentials: no AWS credentials were found (environment, profile, web \
                     identity, container or instance metadata): {e}"
                ))
            }
            other => failed(format!("cannot get AWS credentials: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::Credentials;
    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out credentials that expire `valid_for` from now, counting calls.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        valid_for: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("key-{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.valid_for),
                "test",
            )))
        }
    }

    fn credentials(valid_for: Duration) -> (SdkCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            valid_for,
        });
        let c = SdkCredentials {
            provider: Some(provider),
            cached: tokio::sync::Mutex::new(None),
            found_before: Box::leak(Box::new(AtomicBool::new(false))),
            refresh_failing: AtomicBool::new(false),
        };
        (c, calls)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn credentials_are_cached_until_shortly_before_they_expire() {
        let (c, calls) = credentials(Duration::from_secs(3600));
        let first = run(c.get_credential()).unwrap();
        let again = run(c.get_credential()).unwrap();
        assert_eq!(
            (first.key_id.as_str(), again.key_id.as_str()),
            ("key-0", "key-0")
        );
        assert_eq!(first.token.as_deref(), Some("token"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Expiring within the refresh margin: asked for again each time.
        let (c, calls) = credentials(Duration::from_secs(60));
        run(c.get_credential()).unwrap();
        let renewed = run(c.get_credential()).unwrap();
        assert_eq!(renewed.key_id, "key-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn no_credentials_at_all_is_denied_not_passing() {
        let c = SdkCredentials {
            provider: None,
            cached: tokio::sync::Mutex::new(None),
            found_before: Box::leak(Box::new(AtomicBool::new(false))),
            refresh_failing: AtomicBool::new(false),
        };
        let e = run(c.get_credential()).unwrap_err();
        assert_eq!(crate::classify(&e), crate::FailureClass::Denied, "{e}");
    }

    /// Finds credentials on its first call only, as instance metadata that
    /// stops answering does.
    #[derive(Debug)]
    struct OnceOnly(AtomicUsize);

    impl ProvideCredentials for OnceOnly {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(Credentials::new(
                    "key",
                    "secret",
                    None,
                    Some(SystemTime::now()),
                    "test",
                )),
                _ => Err(CredentialsError::not_loaded(
                    "the metadata service did not answer",
                )),
            })
        }
    }

    /// Hands out credentials valid for `valid_for` on its first call, then
    /// fails, as a throttled token service does.
    #[derive(Debug)]
    struct ThenFails {
        calls: AtomicUsize,
        valid_for: Duration,
    }

    impl ProvideCredentials for ThenFails {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(match self.calls.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(Credentials::new(
                    "key",
                    "secret",
                    None,
                    Some(SystemTime::now() + self.valid_for),
                    "test",
                )),
                _ => Err(CredentialsError::provider_error("Rate exceeded")),
            })
        }
    }

    /// A refresh ahead of expiry that fails keeps the credentials that still
    /// hold (and asks again on the next request); once too little of their
    /// life is left, the failure is the request's.
    #[test]
    fn a_failed_refresh_uses_the_credentials_while_they_last() {
        let chain = |valid_for| {
            let provider = ThenFails {
                calls: AtomicUsize::new(0),
                valid_for,
            };
            SdkCredentials {
                provider: Some(SharedCredentialsProvider::new(provider)),
                cached: tokio::sync::Mutex::new(None),
                found_before: Box::leak(Box::new(AtomicBool::new(false))),
                refresh_failing: AtomicBool::new(false),
            }
        };
        // Four minutes left: within the refresh margin, still usable.
        let c = chain(Duration::from_secs(240));
        run(c.get_credential()).unwrap();
        for _ in 0..2 {
            assert_eq!(run(c.get_credential()).unwrap().key_id, "key");
        }
        assert!(c.refresh_failing.load(Ordering::Relaxed));
        // Ten seconds left: the refresh's failure is the request's.
        let c = chain(Duration::from_secs(10));
        run(c.get_credential()).unwrap();
        let e = run(c.get_credential()).unwrap_err();
        assert_eq!(crate::classify(&e), crate::FailureClass::Passing, "{e}");
    }

    /// None found, where this process found some before (in a chain of an
    /// earlier pass), is a source that did not answer this time: passing.
    /// None found ever is denied.
    #[test]
    fn no_credentials_after_some_were_found_may_pass() {
        let found_before: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let chain = |provider| SdkCredentials {
            provider: Some(SharedCredentialsProvider::new(provider)),
            cached: tokio::sync::Mutex::new(None),
            found_before,
            refresh_failing: AtomicBool::new(false),
        };
        let never = chain(OnceOnly(AtomicUsize::new(1)));
        let e = run(never.get_credential()).unwrap_err();
        assert_eq!(crate::classify(&e), crate::FailureClass::Denied, "{e}");

        // Found, then (credentials expiring, asked for again) not found.
        let once = chain(OnceOnly(AtomicUsize::new(0)));
        run(once.get_credential()).unwrap();
        let e = run(once.get_credential()).unwrap_err();
        assert_eq!(crate::classify(&e), crate::FailureClass::Passing, "{e}");
        // And in the next pass's chain too.
        let next_pass = chain(OnceOnly(AtomicUsize::new(1)));
        let e = run(next_pass.get_credential()).unwrap_err();
        assert_eq!(crate::classify(&e), crate::FailureClass::Passing, "{e}");
    }
}
