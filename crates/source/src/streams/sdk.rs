//! [`StreamsApi`] over the AWS SDK for Rust, and the DescribeTable lookup of
//! a table's stream.
//!
//! Credentials come from the standard AWS chain (environment, profile, web
//! identity, container, instance metadata); nothing secret is logged. The
//! SDK retries throttling and server errors a few times itself; what still
//! fails is classified into an [`ApiErrorKind`] for the reader to act on.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodbstreams::config::http::HttpResponse;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::events::{CallResult, Request, RequestAnswered};
use crate::streams::api::{
    ApiError, ApiErrorKind, IteratorStart, RecordsPage, ShardPage, StreamsApi,
};
use crate::streams::raw_records::{KeepBody, Stash};
use crate::streams::tracker::ShardInfo;

/// Where the SDK connects.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// AWS region; the standard chain decides when `None`.
    pub region: Option<String>,
    /// Another endpoint (DynamoDB Local, moto) for both services.
    pub endpoint_url: Option<String>,
}

/// The SDK clients for DynamoDB Streams and (for DescribeTable) DynamoDB.
#[derive(Clone, Debug)]
pub struct SdkStreams {
    pub(crate) streams: aws_sdk_dynamodbstreams::Client,
    pub(crate) tables: aws_sdk_dynamodb::Client,
}

impl SdkStreams {
    /// Loads the AWS configuration (region, credentials chain) and builds the
    /// clients. Credentials are fetched on the first call, not here.
    pub async fn connect(endpoint: &Endpoint) -> Self {
        Self::build(endpoint, None).await
    }

    /// Like [`SdkStreams::connect`] with fixed credentials instead of the
    /// chain: for local endpoints (DynamoDB Local, moto, simulators), which
    /// accept any.
    pub async fn connect_static(endpoint: &Endpoint, access_key: &str, secret: &str) -> Self {
        let credentials = aws_credential_types::Credentials::new(
            access_key,
            secret,
            None,
            None,
            "dynamo-cdc-static",
        );
        Self::build(endpoint, Some(credentials)).await
    }

    async fn build(
        endpoint: &Endpoint,
        credentials: Option<aws_credential_types::Credentials>,
    ) -> Self {
        let config = sdk_config(endpoint, credentials).await;
        SdkStreams {
            streams: aws_sdk_dynamodbstreams::Client::new(&config),
            tables: aws_sdk_dynamodb::Client::new(&config),
        }
    }
}

/// The AWS configuration the clients use: region, endpoint, credentials
/// (the standard chain unless given), retries, timeouts, and the HTTP client
/// (rustls with ring). Tests build their own DynamoDB clients from it.
pub async fn sdk_config(
    endpoint: &Endpoint,
    credentials: Option<aws_credential_types::Credentials>,
) -> aws_config::SdkConfig {
    // rustls with ring: no TLS library to install, plain http:// works
    // for local endpoints.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(region) = &endpoint.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

impl SdkStreams {
    /// The ARN of `table`'s current stream (DescribeTable's LatestStreamArn).
    ///
    /// # Errors
    /// When the table cannot be described or has no stream enabled.
    pub async fn stream_of_table(&self, table: &str) -> Result<String, ApiError> {
        let info = crate::snapshot::TableApi::describe_table(self, table).await?;
        info.stream_arn.ok_or_else(|| ApiError {
            kind: ApiErrorKind::Fatal,
            operation: Request::DescribeTable.name(),
            message: format!(
                "table `{table}` has no stream enabled; enable one with StreamViewType \
                 NEW_AND_OLD_IMAGES (or NEW_IMAGE)"
            ),
        })
    }
}

impl StreamsApi for SdkStreams {
    async fn describe_stream(
        &self,
        stream_arn: &str,
        exclusive_start: Option<&str>,
    ) -> Result<ShardPage, ApiError> {
        let out = self
            .streams
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(exclusive_start.map(str::to_owned))
            .send()
            .await
            .map_err(|e| classify(Request::DescribeStream, &e));
        let out = counted(Request::DescribeStream, out)?;
        let Some(d) = out.stream_description() else {
            return Err(ApiError {
                kind: ApiErrorKind::Fatal,
                operation: Request::DescribeStream.name(),
                message: "the answer has no StreamDescription".into(),
            });
        };
        let shards = d
            .shards()
            .iter()
            .filter_map(|s| {
                Some(ShardInfo {
                    id: s.shard_id()?.to_owned(),
                    parent: s.parent_shard_id().map(str::to_owned),
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                })
            })
            .collect();
        Ok(ShardPage {
            shards,
            last_evaluated: d.last_evaluated_shard_id().map(str::to_owned),
            table: d.table_name().map(str::to_owned),
        })
    }

    async fn get_shard_iterator(
        &self,
        stream_arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, ApiError> {
        let (kind, seq) = match start {
            IteratorStart::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            IteratorStart::Latest => (ShardIteratorType::Latest, None),
            IteratorStart::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq)),
        };
        let out = self
            .streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(seq.map(on_the_wire))
            .send()
            .await
            .map_err(|e| classify(Request::GetShardIterator, &e));
        let out = counted(Request::GetShardIterator, out)?;
        out.shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| ApiError {
                kind: ApiErrorKind::NotFound,
                operation: Request::GetShardIterator.name(),
                message: format!("no iterator returned for shard {shard}"),
            })
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, ApiError> {
        let stash = Stash::default();
        let out = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit).unwrap_or(1000))
            .customize()
            .interceptor(KeepBody {
                stash: stash.clone(),
            })
            .send()
            .await
            .map_err(|e| classify(Request::GetRecords, &e));
        let out = counted(Request::GetRecords, out)?;
        let kept = stash.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(body) = kept {
            return Ok(RecordsPage { body });
        }
        // The body was not kept (the interceptor did not run): what the SDK
        // parsed, rendered back.
        let records: Vec<String> = out
            .records()
            .iter()
            .map(|r| record_json(r).to_string())
            .collect();
        Ok(RecordsPage::from_records(
            &records,
            out.next_shard_iterator(),
        ))
    }
}

/// Counts the call's answer and passes it on.
pub(crate) fn counted<T>(request: Request, result: Result<T, ApiError>) -> Result<T, ApiError> {
    RequestAnswered {
        request,
        result: CallResult::of(&result),
    }
    .emit();
    result
}

/// Sorts a failed call by what the reader should do about it.
pub(crate) fn classify<E>(request: Request, error: &SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let kind = match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ApiErrorKind::Transient
        }
        _ => match error.code() {
            Some("ExpiredIteratorException") => ApiErrorKind::ExpiredIterator,
            Some("TrimmedDataAccessException") => ApiErrorKind::TrimmedData,
            Some("ResourceNotFoundException") => ApiErrorKind::NotFound,
            Some(
                "LimitExceededException"
                | "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded",
            ) => ApiErrorKind::Throttled,
            Some("InternalServerError" | "ServiceUnavailable") => ApiErrorKind::Transient,
            _ if status.is_some_and(|s| s >= 500) => ApiErrorKind::Transient,
            _ => ApiErrorKind::Fatal,
        },
    };
    let mut message = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => aws_sdk_dynamodbstreams::error::DisplayErrorContext(error).to_string(),
    };
    if let Some(s) = status {
        message = format!("HTTP {s}, {message}");
    }
    ApiError {
        kind,
        operation: request.name(),
        message,
    }
}

/// A record in the GetRecords JSON shape (what the replay reader reads).
fn record_json(r: &Record) -> Value {
    let mut body = Map::new();
    if let Some(d) = r.dynamodb() {
        if let Some(t) = d.approximate_creation_date_time() {
            body.insert("ApproximateCreationDateTime".into(), json!(t.as_secs_f64()));
        }
        for (name, image) in [
            ("Keys", d.keys()),
            ("NewImage", d.new_image()),
            ("OldImage", d.old_image()),
        ] {
            if let Some(image) = image {
                body.insert(name.into(), map_json(image));
            }
        }
        if let Some(seq) = d.sequence_number() {
            body.insert("SequenceNumber".into(), json!(seq));
        }
        if let Some(size) = d.size_bytes() {
            body.insert("SizeBytes".into(), json!(size));
        }
        if let Some(view) = d.stream_view_type() {
            body.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    let mut out = Map::new();
    if let Some(id) = r.event_id() {
        out.insert("eventID".into(), json!(id));
    }
    if let Some(name) = r.event_name() {
        out.insert("eventName".into(), json!(name.as_str()));
    }
    if let Some(source) = r.event_source() {
        out.insert("eventSource".into(), json!(source));
    }
    if let Some(region) = r.aws_region() {
        out.insert("awsRegion".into(), json!(region));
    }
    out.insert("dynamodb".into(), Value::Object(body));
    if let Some(who) = r.user_identity() {
        out.insert(
            "userIdentity".into(),
            json!({"PrincipalId": who.principal_id(), "Type": who.r#type()}),
        );
    }
    Value::Object(out)
}

fn map_json(map: &std::collections::HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &AttributeValue) -> Value {
    let b64 = |b: &aws_smithy_types::Blob| Value::String(BASE64.encode(b.as_ref()));
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(v) => json!({ "L": v.iter().map(value_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": map_json(m) }),
        // A type this SDK does not know: kept visible so the record is
        // dead-lettered with a clear "unknown type" error, never dropped.
        _ => json!({ "UNKNOWN": null }),
    }
}

/// A sequence number as the service takes it back: at least 21 digits.
/// Positions drop leading zeros (they compare as numbers), but DynamoDB
/// Local numbers its records from `000000000000000000001` and, as the API
/// model says (21 to 40 characters), refuses a shorter one. AWS's own are
/// longer, and unchanged.
fn on_the_wire(seq: &dynamo_cdc_core::SequenceNumber) -> String {
    format!("{:0>21}", seq.as_str())
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_testkit::streams_sim::{Fault, Op, StreamSim};

    use super::*;
    use crate::events::REQUESTS_TOTAL;
    use dynamo_cdc_testkit::metrics::Counters;

    #[test]
    fn a_sequence_number_goes_back_with_at_least_21_digits() {
        let wire = |text: &str| on_the_wire(&dynamo_cdc_core::SequenceNumber::parse(text).unwrap());
        // DynamoDB Local's first record, and its position after a restart.
        assert_eq!(wire("000000000000000000005"), "000000000000000000005");
        assert_eq!(wire("5"), "000000000000000000005");
        // AWS's are longer: as they are.
        assert_eq!(
            wire("49637181428427094810355412981765476380"),
            "49637181428427094810355412981765476380"
        );
        assert_eq!(wire("1100000000017454423009"), "1100000000017454423009");
    }

    #[test]
    fn every_call_is_counted_by_api_and_result() {
        let sim = StreamSim::start();
        let arn = sim.create_stream("orders");
        let shard = sim.open_shards(&arn).remove(0);
        let endpoint = Endpoint {
            region: Some("us-east-1".into()),
            endpoint_url: Some(sim.endpoint_url()),
        };
        // A runtime on this thread: the local recorder sees every call.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || {
            runtime.block_on(async {
                let api = SdkStreams::connect_static(&endpoint, "test", "test").await;
                api.describe_stream(&arn, None).await.unwrap();
                // More throttles than the SDK's own attempts.
                sim.fail_next(Op::GetShardIterator, 10, Fault::Throttle);
                let start = IteratorStart::TrimHorizon;
                let e = api.get_shard_iterator(&arn, &shard, &start).await;
                assert_eq!(e.unwrap_err().kind, ApiErrorKind::Throttled);
                sim.clear_faults();
                let it = api.get_shard_iterator(&arn, &shard, &start).await.unwrap();
                api.get_records(&it, 10).await.unwrap();
                api.stream_of_table("orders").await.unwrap();
                api.stream_of_table("missing").await.unwrap_err();
            });
        });
        let count = |api: &str, result: &str| {
            counters.get(&format!("{REQUESTS_TOTAL}{{api={api},result={result}}}"))
        };
        assert_eq!(count("DescribeStream", "ok"), 1);
        assert_eq!(count("GetShardIterator", "throttled"), 1);
        assert_eq!(count("GetShardIterator", "ok"), 1);
        assert_eq!(count("GetRecords", "ok"), 1);
        assert_eq!(count("DescribeTable", "ok"), 1);
        assert_eq!(count("DescribeTable", "error"), 1);
    }
}
