//! SigV4 request signing for REST catalogs behind AWS authentication: the
//! Glue Iceberg endpoint (signing name `glue`) and S3 Tables (`s3tables`).
//!
//! iceberg-catalog-rest sends its requests with a plain reqwest client and
//! has no hook to sign them, so signing happens in a proxy. With
//! `rest.sigv4-enabled = "true"` the catalog is pointed at
//! `http://127.0.0.1:<port>/<secret><path of catalog_uri>`, and a task on
//! the sink's runtime reads each request there, signs it, sends it to the
//! configured endpoint and streams the answer back. The proxy listens on the
//! loopback interface only and answers only paths that start with a random
//! secret made at start, which only the catalog is told: another process on
//! the host, or a container sharing the pod's network, cannot send requests
//! signed with this process's credentials. It lives as long as the catalog
//! ([`SigningProxy`] stops it when dropped).
//!
//! Requests are signed as the Java and Python Iceberg clients sign them:
//! every header but the hop-by-hop ones and `user-agent`, the payload's
//! SHA-256 in the canonical request, the path encoded twice (as for every
//! AWS service but S3), `x-amz-security-token` with temporary credentials,
//! and `x-amz-content-sha256` only on an empty body. Credentials come from
//! the AWS SDK's default chain (environment, profile, web identity,
//! container and instance metadata), cached until five minutes before they
//! expire.
//!
//! An endpoint that cannot be reached is answered with 502 and credentials
//! that cannot be had with 503, so the catalog client fails the request and
//! the sink treats it as passing. Each outage is logged when it starts and
//! when it ends, not per request.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use iceberg::{Error, ErrorKind};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

mod wire;

use wire::{Connection, Incoming, Refusal, Unreadable, forwarded_headers};

/// Turns signing on: `"true"` or `"false"` (the default).
pub(crate) const SIGV4_ENABLED: &str = "rest.sigv4-enabled";
/// The service name in the signature's scope.
pub(crate) const SIGNING_NAME: &str = "rest.signing-name";
/// The region in the signature's scope.
pub(crate) const SIGNING_REGION: &str = "rest.signing-region";

/// The signing name when none is set: the Glue Iceberg endpoint's. (The Java
/// and Python clients default to `execute-api`, API Gateway's: a catalog
/// behind API Gateway sets it.)
const DEFAULT_SIGNING_NAME: &str = "glue";

/// The SHA-256 of an empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials are asked for again this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// How long the endpoint has to accept a connection before the request is
/// answered with 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the catalog properties ask of signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SigningConfig {
    /// The service name in the signature's scope.
    pub(crate) name: String,
    /// The region in the signature's scope; `None`: the AWS SDK's region.
    pub(crate) region: Option<String>,
}

impl SigningConfig {
    /// Reads the signing properties; `None` when signing is off.
    ///
    /// # Errors
    /// `(property, reason)` of the first value that is not valid.
    pub(crate) fn from_properties(
        properties: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, (&'static str, String)> {
        let enabled = match properties.get(SIGV4_ENABLED).map(String::as_str) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err((SIGV4_ENABLED, format!("`{v}` is not \"true\" or \"false\"")));
            }
        };
        let name = properties.get(SIGNING_NAME);
        let region = properties.get(SIGNING_REGION);
        if !enabled {
            for (key, value) in [(SIGNING_NAME, name), (SIGNING_REGION, region)] {
                if value.is_some() {
                    return Err((key, format!("applies only with {SIGV4_ENABLED} = \"true\"")));
                }
            }
            return Ok(None);
        }
        if let Some(name) = name
            && !is_scope_part(name)
        {
            return Err((
                SIGNING_NAME,
                format!("`{name}` is not a signing name (glue, s3tables, ...)"),
            ));
        }
        if let Some(region) = region
            && !is_scope_part(region)
        {
            return Err((SIGNING_REGION, format!("`{region}` is not a region name")));
        }
        Ok(Some(SigningConfig {
            name: name.map_or(DEFAULT_SIGNING_NAME, String::as_str).to_owned(),
            region: region.cloned(),
        }))
    }
}

/// Whether `s` can stand in a signature's scope
/// (`<date>/<region>/<service>/aws4_request`): lowercase letters, digits
/// and dashes.
fn is_scope_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The SDK's credentials provider behind a cache: the default chain caches
/// nothing itself, and asking instance metadata or STS on every catalog
/// request would be slow and throttled.
struct CachedCredentials {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl CachedCredentials {
    /// The cached credentials while they are fresh, else new ones.
    async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref()
            && is_fresh(credentials.expiry(), SystemTime::now())
        {
            return Ok(credentials.clone());
        }
        let fresh = self.provider.provide_credentials().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Whether credentials expiring at `expiry` can still be used at `now`.
fn is_fresh(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_none_or(|at| {
        at.duration_since(now)
            .is_ok_and(|left| left > REFRESH_BEFORE)
    })
}

/// Signs catalog requests for one service and region.
pub(crate) struct Signer {
    credentials: CachedCredentials,
    region: String,
    name: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A request about to be sent to the endpoint, as it is signed.
struct Outgoing<'a> {
    method: &'a str,
    /// The endpoint's URL, exactly as the upstream client sends it.
    url: &'a str,
    /// Lowercase names; no `host` (the URL's is signed, and sent).
    headers: &'a [(String, String)],
    body: &'a [u8],
}

impl Signer {
    /// A signer with credentials from `provider`.
    pub(crate) fn new(
        provider: SharedCredentialsProvider,
        region: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Signer {
            credentials: CachedCredentials {
                provider,
                cached: tokio::sync::Mutex::new(None),
            },
            region: region.into(),
            name: name.into(),
        }
    }

    /// A signer with the AWS SDK's default credentials chain and, unless
    /// `signing.region` is set, its region. Credentials are asked for once
    /// here, so that having none at all stops the start with a clear error
    /// instead of failing every request.
    ///
    /// # Errors
    /// No region or no credentials (`DataInvalid`: waiting will not help), or
    /// a credentials source that does not answer (may pass).
    pub(crate) async fn from_default_chain(signing: &SigningConfig) -> iceberg::Result<Self> {
        // The same HTTP client as the S3 credentials chain (rustls with
        // ring), for the metadata and STS endpoints.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        // A configured region spares the chain its search (off EC2, asking
        // instance metadata for one only fails, after a wait).
        if let Some(region) = &signing.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                format!(
                    "no AWS region to sign catalog requests for: set \
                     sinks.iceberg.properties.{SIGNING_REGION}, or AWS_REGION"
                ),
            )
        })?;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            Error::new(
                ErrorKind::DataInvalid,
                "the AWS SDK has no credentials chain to sign catalog requests with",
            )
        })?;
        let signer = Signer::new(provider, region, signing.name.clone());
        signer.credentials.get().await.map_err(credentials_error)?;
        Ok(signer)
    }

    /// The headers that sign `request` made at `time`: `authorization`,
    /// `x-amz-date` and, with temporary credentials, `x-amz-security-token`.
    fn sign(
        &self,
        credentials: Credentials,
        time: SystemTime,
        request: &Outgoing<'_>,
    ) -> Result<Vec<(&'static str, String)>, String> {
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.name)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            request.method,
            request.url,
            request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            SignableBody::Bytes(request.body),
        )
        .map_err(|e| error_chain(&e))?;
        let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|e| error_chain(&e))?
            .into_parts();
        let (headers, _params) = instructions.into_parts();
        Ok(headers
            .into_iter()
            .map(|h| (h.name(), h.value().to_owned()))
            .collect())
    }
}

/// The error for credentials that cannot be had at start: none anywhere is
/// a configuration problem; a source that does not answer may pass.
fn credentials_error(e: CredentialsError) -> Error {
    match e {
        CredentialsError::CredentialsNotLoaded(_) => Error::new(
            ErrorKind::DataInvalid,
            format!(
                "no AWS credentials to sign catalog requests with (environment, profile, web \
                 identity, container or instance metadata): {}",
                error_chain(&e)
            ),
        ),
        other => Error::new(
            ErrorKind::Unexpected,
            format!(
                "cannot get AWS credentials to sign catalog requests with: {}",
                error_chain(&other)
            ),
        )
        .with_retryable(true),
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The signing proxy of one catalog; stopped (with its connections) when
/// dropped.
pub(crate) struct SigningProxy {
    catalog_uri: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SigningProxy {
    // The catalog URI holds the secret path: not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningProxy")
    }
}

impl Drop for SigningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SigningProxy {
    /// Starts a proxy to `endpoint` (the configured `catalog_uri`) on
    /// 127.0.0.1, on the current runtime.
    ///
    /// # Errors
    /// When the endpoint is not an http(s) URL or no port can be had.
    pub(crate) async fn start(endpoint: &str, signer: Signer) -> iceberg::Result<Self> {
        let (origin, path) = split_endpoint(endpoint)
            .map_err(|reason| Error::new(ErrorKind::DataInvalid, reason))?;
        let listen_error = |e| {
            Error::new(
                ErrorKind::Unexpected,
                "cannot listen on 127.0.0.1 for the SigV4 proxy",
            )
            .with_source(e)
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(listen_error)?;
        let port = listener.local_addr().map_err(listen_error)?.port();
        dynamo_cdc_object_store::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unexpected,
                    "cannot build the SigV4 proxy's HTTP client",
                )
                .with_source(e)
            })?;
        let secret = format!("/{}", uuid::Uuid::new_v4().simple());
        let catalog_uri = format!("http://127.0.0.1:{port}{secret}{path}");
        let said = format!("{} {}", signer.name, signer.region);
        if crate::events::is_news(&format!("proxy {origin}"), said) {
            tracing::info!(
                endpoint = %origin,
                signing_name = %signer.name,
                region = %signer.region,
                "signing REST catalog requests with SigV4 through a proxy on 127.0.0.1:{port}"
            );
        } else {
            tracing::debug!(endpoint = %origin, "SigV4 proxy on 127.0.0.1:{port}");
        }
        let forwarder = Forwarder {
            unreachable: Outage::named(format!("unreachable {origin}")),
            no_credentials: Outage::named(format!("no credentials {origin}")),
            origin,
            secret,
            signer,
            client,
        };
        let task = tokio::spawn(accept(listener, Arc::new(forwarder)));
        Ok(SigningProxy { catalog_uri, task })
    }

    /// The URI the catalog is given in place of the endpoint's.
    pub(crate) fn catalog_uri(&self) -> &str {
        &self.catalog_uri
    }
}

/// Splits the catalog endpoint into its origin (`scheme://host[:port]`,
/// where requests go) and its path as written (kept in the catalog's URI on
/// the proxy, so the catalog builds the same paths).
fn split_endpoint(endpoint: &str) -> Result<(String, &str), String> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("catalog_uri `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "catalog_uri `{endpoint}` is not an http:// or https:// URL"
        ));
    }
    let authority_at = endpoint.find("://").map_or(0, |i| i + 3);
    let path_at = endpoint[authority_at..]
        .find(['/', '?', '#'])
        .map_or(endpoint.len(), |i| authority_at + i);
    Ok((url.origin().ascii_serialization(), &endpoint[path_at..]))
}

/// Accepts connections until the proxy is dropped; dropping this future
/// (the task is aborted) aborts every connection's task with it.
async fn accept(listener: TcpListener, forwarder: Arc<Forwarder>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Heads and small bodies are written whole: no need to wait.
                let _ = stream.set_nodelay(true);
                connections.spawn(serve(Connection::new(stream), forwarder.clone()));
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait, do not spin.
                tracing::warn!(error = %e, "the SigV4 proxy cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Answers the requests of one connection, one after the other, until the
/// client closes it or asks to.
async fn serve(mut connection: Connection, forwarder: Arc<Forwarder>) {
    loop {
        let request = match connection.read_request().await {
            Ok(Some(request)) => request,
            Ok(None) | Err(Unreadable::Gone) => return,
            Err(Unreadable::Refused(refusal)) => {
                let _ = connection.write_refusal(&refusal, true).await;
                return;
            }
        };
        let closes = request.head.closes();
        let written = match forwarder.answer(&request).await {
            Ok(response) => {
                connection
                    .write_response(response, &request.head, closes)
                    .await
            }
            Err(refusal) => connection.write_refusal(&refusal, closes).await,
        };
        if written.is_err() || closes {
            return;
        }
    }
}

/// The endpoint's URL for a request target on the proxy: the secret prefix
/// checked and removed, the rest appended to the endpoint's origin.
fn upstream_url(origin: &str, secret: &str, target: &str) -> Result<reqwest::Url, Refusal> {
    let prefix = target.get(..secret.len()).unwrap_or_default();
    let rest = &target[prefix.len()..];
    if !same_secret(prefix, secret) || !rest.starts_with('/') {
        return Err(Refusal::new(403, "not a request of this process's catalog"));
    }
    reqwest::Url::parse(&format!("{origin}{rest}"))
        .map_err(|e| Refusal::new(400, format!("request target `{rest}`: {e}")))
}

/// Compares the secret in constant time, so its bytes cannot be guessed one
/// by one from how long a refusal takes.
fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether something the proxy needs is failing, so an outage is logged
/// when it starts and when it ends, not on every request. Known to the
/// whole process by name: each pass of the pipeline makes a proxy of its
/// own, and an outage outlasts many passes (each retried within 16 s).
#[derive(Debug)]
struct Outage(String);

/// The outages going on, by name.
static FAILING: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

impl Outage {
    fn named(name: String) -> Self {
        Outage(name)
    }

    fn failing() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
        FAILING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A failure: true when it starts an outage.
    fn fail(&self) -> bool {
        Self::failing().insert(self.0.clone())
    }

    /// A success: true when it ends an outage.
    fn pass(&self) -> bool {
        Self::failing().remove(&self.0)
    }
}

/// Signs requests and sends them to the endpoint.
struct Forwarder {
    /// `scheme://host[:port]` of the endpoint.
    origin: String,
    /// `/<random hex>`: the path prefix only the catalog is told.
    secret: String,
    signer: Signer,
    client: reqwest::Client,
    unreachable: Outage,
    no_credentials: Outage,
}

impl Forwarder {
    /// The endpoint's answer to `request`, signed, or the proxy's own.
    async fn answer(&self, request: &Incoming) -> Result<reqwest::Response, Refusal> {
        let url = upstream_url(&self.origin, &self.secret, &request.head.target)?;
        let mut headers = forwarded_headers(&request.head.headers);
        // As the Java and Python clients do: some endpoints want the header
        // on bodiless requests, and it is the hash the signature holds.
        if request.body.is_empty() {
            headers.push(("x-amz-content-sha256".to_owned(), EMPTY_SHA256.to_owned()));
        }
        let credentials = self.credentials().await?;
        let outgoing = Outgoing {
            method: &request.head.method,
            url: url.as_str(),
            headers: &headers,
            body: &request.body,
        };
        let signature = self
            .signer
            .sign(credentials, SystemTime::now(), &outgoing)
            .map_err(|e| Refusal::new(400, format!("cannot sign the request: {e}")))?;
        let method = reqwest::Method::from_bytes(request.head.method.as_bytes())
            .map_err(|_| Refusal::new(400, "malformed method"))?;
        let all = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(signature.iter().map(|(n, v)| (*n, v.as_str())));
        let sent = header_map(all)?;
        let sending = self
            .client
            .request(method, url)
            .headers(sent)
            .body(request.body.clone())
            .send()
            .await;
        self.outcome(sending)
    }

    async fn credentials(&self) -> Result<Credentials, Refusal> {
        match self.signer.credentials.get().await {
            Ok(credentials) => {
                if self.no_credentials.pass() {
                    tracing::info!("AWS credentials for signing catalog requests are back");
                }
                Ok(credentials)
            }
            Err(e) => {
                let reason = error_chain(&e);
                if self.no_credentials.fail() {
                    tracing::warn!(
                        error = %reason,
                        "cannot get AWS credentials to sign catalog requests; they are answered with 503 until it can"
                    );
                }
                Err(Refusal::new(
                    503,
                    format!("the SigV4 proxy cannot get AWS credentials: {reason}"),
                ))
            }
        }
    }

    fn outcome(
        &self,
        sending: reqwest::Result<reqwest::Response>,
    ) -> Result<reqwest::Response, Refusal> {
        match sending {
            Ok(response) => {
                if self.unreachable.pass() {
                    tracing::info!(endpoint = %self.origin, "the REST catalog endpoint answers again");
                }
                Ok(response)
            }
            Err(e) => {
                let reason = error_chain(&e);
                if self.unreachable.fail() {
                    tracing::warn!(
                        endpoint = %self.origin,
                        error = %reason,
                        "the REST catalog endpoint cannot be reached; catalog requests are answered with 502 until it can"
                    );
                }
                Err(Refusal::new(
                    502,
                    format!("the SigV4 proxy cannot reach {}: {reason}", self.origin),
                ))
            }
        }
    }
}

/// The headers sent to the endpoint.
fn header_map<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<reqwest::header::HeaderMap, Refusal> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in pairs {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(Refusal::new(400, "malformed header"));
        };
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod end_to_end;

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn signing_is_off_unless_enabled() {
        assert_eq!(SigningConfig::from_properties(&properties(&[])), Ok(None));
        let off = properties(&[(SIGV4_ENABLED, "false")]);
        assert_eq!(SigningConfig::from_properties(&off), Ok(None));
    }

    #[test]
    fn signing_defaults_to_glue_and_the_sdk_region() {
        let on = properties(&[(SIGV4_ENABLED, "TRUE")]);
        assert_eq!(
            SigningConfig::from_properties(&on),
            Ok(Some(SigningConfig {
                name: "glue".to_owned(),
                region: None
            }))
        );
        let s3tables = properties(&[
            (SIGV4_ENABLED, "true"),
            (SIGNING_NAME, "s3tables"),
            (SIGNING_REGION, "eu-west-1"),
        ]);
        assert_eq!(
            SigningConfig::from_properties(&s3tables),
            Ok(Some(SigningConfig {
                name: "s3tables".to_owned(),
                region: Some("eu-west-1".to_owned())
            }))
        );
    }

    #[test]
    fn bad_signing_properties_name_their_key() {
        let key = |pairs: &[(&str, &str)]| {
            SigningConfig::from_properties(&properties(pairs))
                .unwrap_err()
                .0
        };
        assert_eq!(key(&[(SIGV4_ENABLED, "yes")]), SIGV4_ENABLED);
        assert_eq!(
            key(&[(SIGV4_ENABLED, "true"), (SIGNING_NAME, "Glue")]),
            SIGNING_NAME
        );
        assert_eq!(
            key(&[(SIGV4_ENABLED, "true"), (SIGNING_REGION, "us-east-1/x")]),
            SIGNING_REGION
        );
        assert_eq!(
            key(&[(SIGV4_ENABLED, "true"), (SIGNING_REGION, "")]),
            SIGNING_REGION
        );
        // Set without signing: it would do nothing.
        assert_eq!(key(&[(SIGNING_NAME, "glue")]), SIGNING_NAME);
        assert_eq!(
            key(&[(SIGV4_ENABLED, "false"), (SIGNING_REGION, "us-east-1")]),
            SIGNING_REGION
        );
    }

    #[test]
    fn the_endpoint_splits_into_origin_and_path() {
        let split = |uri| split_endpoint(uri).unwrap();
        assert_eq!(
            split("https://glue.us-east-1.amazonaws.com/iceberg"),
            (
                "https://glue.us-east-1.amazonaws.com".to_owned(),
                "/iceberg"
            )
        );
        assert_eq!(
            split("https://S3Tables.us-east-1.amazonaws.com:443/iceberg/"),
            (
                "https://s3tables.us-east-1.amazonaws.com".to_owned(),
                "/iceberg/"
            )
        );
        assert_eq!(
            split("http://127.0.0.1:8181"),
            ("http://127.0.0.1:8181".to_owned(), "")
        );
        assert!(split_endpoint("ftp://h/x").is_err());
        assert!(split_endpoint("glue.us-east-1.amazonaws.com").is_err());
    }

    #[test]
    fn only_targets_under_the_secret_reach_the_endpoint() {
        let origin = "https://glue.us-east-1.amazonaws.com";
        let secret = "/0123abcd";
        let url = upstream_url(
            origin,
            secret,
            "/0123abcd/iceberg/v1/config?warehouse=1%2F2",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://glue.us-east-1.amazonaws.com/iceberg/v1/config?warehouse=1%2F2"
        );
        for target in [
            "/v1/config",
            "/0123abce/v1/config",
            "/0123abcd",
            "/0123abcdx/v1",
            "/0123",
            "*",
        ] {
            assert_eq!(
                upstream_url(origin, secret, target).unwrap_err().status,
                403,
                "{target}"
            );
        }
    }

    #[test]
    fn an_outage_is_reported_once_each_way() {
        let outage = Outage::named("test: once each way".into());
        assert!(!outage.pass());
        assert!(outage.fail());
        assert!(!outage.fail());
        assert!(outage.pass());
        assert!(!outage.pass());
    }

    /// Each pass makes a proxy of its own: an outage the last one met is
    /// not started again by the next, and ends once, whichever sees it end.
    #[test]
    fn an_outage_outlasts_the_proxy_that_met_it() {
        let name = "test: outlasts its proxy";
        let first = Outage::named(name.into());
        assert!(first.fail());
        drop(first);
        let next = Outage::named(name.into());
        assert!(!next.fail(), "the same outage, not a new one");
        assert!(next.pass());
        assert!(!Outage::named(name.into()).pass());
        // Another endpoint's is its own.
        assert!(Outage::named("test: another endpoint".into()).fail());
    }

    #[test]
    fn credentials_are_used_until_shortly_before_they_expire() {
        let now = SystemTime::now();
        assert!(is_fresh(None, now));
        assert!(is_fresh(Some(now + Duration::from_secs(3600)), now));
        assert!(!is_fresh(Some(now + Duration::from_secs(60)), now));
        assert!(!is_fresh(Some(now - Duration::from_secs(1)), now));
    }

    /// The worked example of AWS's SigV4 documentation (IAM ListUsers),
    /// signed here with the same credentials and time.
    #[test]
    fn the_signature_matches_the_documented_example() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "example",
        );
        let provider = SharedCredentialsProvider::new(credentials.clone());
        let signer = Signer::new(provider, "us-east-1", "iam");
        let headers = vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        )];
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let request = Outgoing {
            method: "GET",
            url: "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let signed = signer.sign(credentials, time, &request).unwrap();
        let get = |name| {
            signed
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            )
        );
        assert_eq!(get("x-amz-security-token"), None);
    }
}
