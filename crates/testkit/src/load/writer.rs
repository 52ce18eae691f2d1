//! The DynamoDB side of `load`: the client, the table (checked or created)
//! and one write, with its failure classified.
//!
//! The SDK's own retries are off: a failed attempt comes back here at once,
//! so every throttle and outage is counted and the lane's backoff decides
//! when to try again.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableDescription, TableStatus, TimeToLiveSpecification,
};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use super::items::{HASH_KEY, Op, RANGE_KEY, TTL_ATTRIBUTE};
use super::request::{item_to_sdk, update};

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Throttled (ThrottlingException, ProvisionedThroughputExceeded, …).
    Throttled(String),
    /// No answer, a timeout or a server error.
    Unavailable(String),
    /// The write's condition failed: the item changed or is gone.
    Skipped,
    /// The endpoint refused the request as invalid.
    Rejected { code: String, message: String },
    /// Retrying cannot help (the table is gone, access denied).
    Fatal(String),
}

/// How long a first contact waits for an endpoint that is not up yet (a
/// container still starting).
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);
/// How long a new table may take to become ACTIVE.
const CREATE_PATIENCE: Duration = Duration::from_secs(180);

/// Where the writes go.
pub(crate) struct Writer {
    client: Client,
    table: String,
}

/// A client for `endpoint_url` (AWS's own when `None`), and the region it
/// uses: `region`, else the SDK's chain (AWS_REGION, profile, instance
/// metadata), else us-east-1.
pub(crate) async fn connect(endpoint_url: Option<&str>, region: Option<&str>) -> (Client, String) {
    let config = load_config(endpoint_url, region.map(|r| Region::new(r.to_owned()))).await;
    // Looked up by the SDK's own chain first, which reads instance metadata
    // through the HTTP client configured here.
    let config = match config.region() {
        Some(_) => config,
        None => load_config(endpoint_url, Some(Region::from_static("us-east-1"))).await,
    };
    let region = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    (Client::new(&config), region)
}

async fn load_config(endpoint_url: Option<&str>, region: Option<Region>) -> aws_config::SdkConfig {
    // rustls with ring, as the bridge uses: nothing to install, and plain
    // http:// works for local endpoints.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                // Generous for a write (DynamoDB answers in milliseconds),
                // short enough that a hung endpoint shows as an outage soon.
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(region);
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

fn describe_error<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("(no message)")
            )
        }
        other => {
            // Each cause once, without the Debug dumps DisplayErrorContext
            // adds: "dispatch failure: io error: Connection refused".
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let line = cause.to_string();
                if !text.contains(&line) {
                    text.push_str(": ");
                    text.push_str(&line);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// Sorts a failed call into what the caller should do about it.
fn classify<E>(e: &SdkError<E, HttpResponse>, table: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = describe_error(e);
    let SdkError::ServiceError(se) = e else {
        // Timeouts, refused connections, garbled answers: the endpoint may
        // be restarting.
        return Failure::Unavailable(text);
    };
    let code = se.err().code().unwrap_or_default();
    match code {
        "ConditionalCheckFailedException" => Failure::Skipped,
        "ThrottlingException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "TransactionConflictException" => Failure::Throttled(text),
        "ResourceNotFoundException" => Failure::Fatal(format!(
            "table `{table}` is gone (was it deleted during the run?): {text}"
        )),
        "ValidationException"
        | "SerializationException"
        | "ItemCollectionSizeLimitExceededException" => Failure::Rejected {
            code: code.to_owned(),
            message: text,
        },
        _ if se.raw().status().is_server_error() => Failure::Unavailable(text),
        _ => Failure::Fatal(text),
    }
}

/// What the caller learns about the table.
pub(crate) struct TableReport {
    /// The table was created by this run.
    pub(crate) created: bool,
    /// Warnings worth printing (no stream, another stream view type).
    pub(crate) warnings: Vec<String>,
}

impl Writer {
    pub(crate) fn new(client: Client, table: &str) -> Self {
        Writer {
            client,
            table: table.to_owned(),
        }
    }

    /// Checks that the table exists with keys `pk` (S) and `sk` (S),
    /// creating it when missing and `create` is set, and waits until it is
    /// ACTIVE. `stopping` ends the waits early.
    pub(crate) async fn ensure_table(
        &self,
        create: bool,
        where_: &str,
        stopping: &dyn Fn() -> bool,
    ) -> Result<TableReport, String> {
        let mut report = TableReport {
            created: false,
            warnings: Vec::new(),
        };
        let description = match self.describe(where_, stopping).await? {
            Some(d) => d,
            None if create => {
                self.create().await?;
                report.created = true;
                self.wait_active(stopping).await?
            }
            None => {
                return Err(format!(
                    "table `{}` does not exist at {where_}; create it (keys pk and sk, both \
                     strings, with a stream) or pass --create to have it created (on-demand, \
                     stream NEW_AND_OLD_IMAGES)",
                    self.table
                ));
            }
        };
        self.check_keys(&description)?;
        // An UPDATING table (a new index, a changed stream) takes writes;
        // only one still being created does not.
        let description = if description.table_status() == Some(&TableStatus::Creating) {
            self.wait_active(stopping).await?
        } else {
            description
        };
        let stream = description.stream_specification();
        match (
            stream.is_some_and(StreamSpecification::stream_enabled),
            stream.and_then(StreamSpecification::stream_view_type),
        ) {
            (false, _) => report.warnings.push(format!(
                "table `{}` has no stream enabled: these writes will not reach a CDC reader",
                self.table
            )),
            (true, Some(StreamViewType::NewAndOldImages)) => {}
            (true, view) => report.warnings.push(format!(
                "table `{}` has a {} stream; NEW_AND_OLD_IMAGES keeps the old image of \
                 updates and deletes",
                self.table,
                view.map_or("KEYS_ONLY", StreamViewType::as_str)
            )),
        }
        if report.created
            && let Err(e) = self.enable_ttl().await
        {
            // TTL is a nicety (DynamoDB then deletes expired carts itself);
            // endpoints without the API still take every write.
            report.warnings.push(format!(
                "could not enable TTL on `{TTL_ATTRIBUTE}`: {e}; items keep the attribute"
            ));
        }
        Ok(report)
    }

    /// DescribeTable; `None` when the table does not exist. Waits for an
    /// endpoint that does not answer yet, up to a minute.
    async fn describe(
        &self,
        where_: &str,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Option<TableDescription>, String> {
        let started = Instant::now();
        let mut said_waiting = false;
        loop {
            let answer = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            let e = match answer {
                Ok(out) => return Ok(out.table),
                Err(e) => e,
            };
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                return Ok(None);
            }
            let reachable_later = matches!(&e, SdkError::TimeoutError(_))
                || matches!(&e, SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout());
            let text = describe_error(&e);
            if !reachable_later {
                // Failing before a request went out is nearly always missing
                // credentials.
                let hint = if matches!(&e, SdkError::DispatchFailure(_)) {
                    "\ncredentials come from the AWS chain (environment, profile, instance \
                     role); DynamoDB Local and moto take any AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY"
                } else {
                    ""
                };
                return Err(format!(
                    "cannot describe table `{}` at {where_}: {text}{hint}",
                    self.table
                ));
            }
            if started.elapsed() > STARTUP_PATIENCE || stopping() {
                return Err(format!(
                    "cannot reach the DynamoDB endpoint at {where_} (tried for {} s): {text}",
                    started.elapsed().as_secs()
                ));
            }
            if !said_waiting {
                eprintln!("dynamo-cdc-gen load: waiting for {where_} to answer: {text}");
                said_waiting = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn create(&self) -> Result<(), String> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| e.to_string())
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())
        };
        let stream = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(key(HASH_KEY, KeyType::Hash)?)
            .key_schema(key(RANGE_KEY, KeyType::Range)?)
            .attribute_definitions(attribute(HASH_KEY)?)
            .attribute_definitions(attribute(RANGE_KEY)?)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(stream)
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else (another load generator).
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot create table `{}`: {}",
                self.table,
                describe_error(&e)
            )),
        }
    }

    async fn wait_active(&self, stopping: &dyn Fn() -> bool) -> Result<TableDescription, String> {
        let started = Instant::now();
        loop {
            let answer = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            match answer.map(|out| out.table) {
                Ok(Some(d)) if d.table_status() == Some(&TableStatus::Active) => return Ok(d),
                Ok(_) => {}
                // Not visible yet (eventually consistent on AWS).
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) => {}
                Err(e) => {
                    return Err(format!(
                        "cannot describe table `{}` while waiting for it to become ACTIVE: {}",
                        self.table,
                        describe_error(&e)
                    ));
                }
            }
            if started.elapsed() > CREATE_PATIENCE || stopping() {
                return Err(format!(
                    "table `{}` did not become ACTIVE within {} s",
                    self.table,
                    started.elapsed().as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn check_keys(&self, d: &TableDescription) -> Result<(), String> {
        let keys: Vec<(String, String)> = d
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        let kind = |name: &str| {
            d.attribute_definitions()
                .iter()
                .find(|a| a.attribute_name() == name)
                .map(|a| a.attribute_type().as_str().to_owned())
        };
        let expected = [
            (HASH_KEY.to_owned(), "HASH".to_owned()),
            (RANGE_KEY.to_owned(), "RANGE".to_owned()),
        ];
        let strings =
            kind(HASH_KEY).as_deref() == Some("S") && kind(RANGE_KEY).as_deref() == Some("S");
        if keys.as_slice() != expected.as_slice() || !strings {
            let have: Vec<String> = keys
                .iter()
                .map(|(name, role)| format!("{name} ({role}, {})", kind(name).unwrap_or_default()))
                .collect();
            return Err(format!(
                "table `{}` is keyed by {}; load writes items keyed by pk (HASH, S) and sk \
                 (RANGE, S): use another table name, or --create with a new one",
                self.table,
                have.join(" and ")
            ));
        }
        Ok(())
    }

    async fn enable_ttl(&self) -> Result<(), String> {
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map(drop)
            .map_err(|e| describe_error(&e))
    }

    /// Sends one planned write.
    pub(crate) async fn apply(&self, op: &Op) -> Result<(), Failure> {
        let table = self.table.as_str();
        match op {
            Op::Put { item, .. } => self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(item_to_sdk(item)))
                .send()
                .await
                .map(drop)
                .map_err(|e| classify(&e, table)),
            Op::Update { keys, old, new } => {
                let u = update(old, new);
                self.client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(item_to_sdk(keys)))
                    .update_expression(u.expression)
                    .condition_expression(u.condition)
                    .set_expression_attribute_names(Some(u.names))
                    .set_expression_attribute_values((!u.values.is_empty()).then_some(u.values))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify(&e, table))
            }
            // Only an item that is there: deleting a missing key writes no
            // stream record, and the summary promises one per delete.
            Op::Delete { keys } => self
                .client
                .delete_item()
                .table_name(table)
                .set_key(Some(item_to_sdk(keys)))
                .condition_expression("attribute_exists(#k)")
                .expression_attribute_names("#k", HASH_KEY)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify(&e, table)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;

    fn service(status: u16, code: &str) -> SdkError<PutItemError, HttpResponse> {
        let err = PutItemError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("what the service said")
                .build(),
        );
        let raw = HttpResponse::new(status.try_into().unwrap(), "".into());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn failures_are_sorted_by_what_retrying_can_do() {
        let c = |status, code| classify(&service(status, code), "orders");
        assert!(matches!(
            c(400, "ThrottlingException"),
            Failure::Throttled(m) if m == "ThrottlingException: what the service said"
        ));
        assert!(matches!(
            c(400, "ProvisionedThroughputExceededException"),
            Failure::Throttled(_)
        ));
        assert!(matches!(
            c(500, "InternalServerError"),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            c(503, "ServiceUnavailable"),
            Failure::Unavailable(_)
        ));
        assert_eq!(c(400, "ConditionalCheckFailedException"), Failure::Skipped);
        assert!(matches!(
            c(400, "ValidationException"),
            Failure::Rejected { code, .. } if code == "ValidationException"
        ));
        assert!(matches!(
            c(400, "ResourceNotFoundException"),
            Failure::Fatal(m) if m.contains("table `orders` is gone")
        ));
        assert!(matches!(c(400, "AccessDeniedException"), Failure::Fatal(_)));
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("too slow");
        assert!(matches!(
            classify(&timeout, "orders"),
            Failure::Unavailable(m) if m.contains("too slow")
        ));
    }
}
