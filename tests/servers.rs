//! Real servers for end-to-end tests: moto (DynamoDB, Streams, S3) and the
//! tansu Kafka broker, each a child process on a free loopback port.
//!
//! `scripts/test.sh` installs both; `DYNAMO_CDC_TANSU` and
//! `DYNAMO_CDC_MOTO_SERVER` name the binaries when they are not on the usual
//! paths.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use dynamo_cdc_source::streams::sdk::{Endpoint, SdkStreams, sdk_config};
use dynamo_cdc_source::streams::{IteratorStart, StreamsApi};
use dynamo_cdc_testkit::free_port;

use crate::Running;

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find(var: &str, fallback: PathBuf, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or(fallback, PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&path).is_file()));
    assert!(
        path.exists() || on_path,
        "{what} not found at {} (set {var}, or run scripts/test.sh, which installs it)",
        path.display()
    );
    path
}

/// A moto server: DynamoDB, DynamoDB Streams and S3 on one port.
pub fn start_moto(dir: &Path) -> (Running, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let moto = find(
        "DYNAMO_CDC_MOTO_SERVER",
        root.join("../.venv/bin/moto_server"),
        "moto_server",
    );
    let port = free_port();
    let mut child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    wait_for_port(port, "moto_server", &mut child);
    (Running(child), format!("http://127.0.0.1:{port}"))
}

/// Creates an S3 bucket in moto (any signature will do; moto routes by the
/// service named in it).
pub fn create_bucket(moto_url: &str, bucket: &str) {
    let host = moto_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to moto");
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "create bucket: {answer}"
    );
}

/// The prefix `s3://lake/cdc` of moto's S3 (the bucket must exist), with
/// create-if-absent copies made as the product's client makes them (a
/// one-part upload copy completed with `If-None-Match: *`).
pub fn moto_lake(moto_url: &str) -> dynamo_cdc_object_store::Objects {
    dynamo_cdc_object_store::install_tls_provider();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("lake")
        .with_region("us-east-1")
        .with_endpoint(moto_url)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_copy_if_not_exists(object_store::aws::S3CopyIfNotExists::Multipart)
        .build()
        .expect("an S3 client for moto");
    dynamo_cdc_object_store::Objects::with_store(
        Arc::new(s3),
        dynamo_cdc_object_store::StoreUrl::parse("s3://lake/cdc").expect("a bucket URL"),
    )
}

/// Where tansu keeps its data.
pub enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// An S3 bucket in moto: survives broker restarts.
    S3 {
        /// moto's URL
        moto_url: String,
        /// the bucket (must exist)
        bucket: String,
    },
}

/// A tansu broker that can be killed and started again on the same port.
pub struct Tansu {
    dir: PathBuf,
    port: u16,
    storage: Storage,
    child: Option<Child>,
}

impl Tansu {
    /// Starts a broker; `dir` is its working directory (it reads `.env`).
    pub fn start(dir: &Path, storage: Storage) -> Tansu {
        let mut t = Tansu {
            dir: dir.to_owned(),
            port: free_port(),
            storage,
            child: None,
        };
        t.restart();
        t
    }

    /// `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the broker shuts down cleanly (killed after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again (after [`Tansu::kill`]), on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let tansu = find("DYNAMO_CDC_TANSU", PathBuf::from("tansu"), "tansu");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(tansu);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.storage {
            Storage::Memory => {
                command.args(["--storage-engine", "memory://tansu/"]);
            }
            Storage::S3 { moto_url, bucket } => {
                command
                    .args(["--storage-engine", &format!("s3://{bucket}/")])
                    .env("AWS_ENDPOINT", moto_url)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_DEFAULT_REGION", "us-east-1");
            }
        }
        let mut child = command.spawn().expect("start tansu");
        wait_for_port(self.port, "tansu", &mut child);
        self.child = Some(child);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An SDK endpoint for moto.
pub fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.to_owned()),
    }
}

/// A DynamoDB client for moto.
pub async fn dynamodb(url: &str) -> aws_sdk_dynamodb::Client {
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint(url), Some(credentials)).await)
}

/// Creates `table` (hash key `pk`, a string) with a NEW_AND_OLD_IMAGES stream.
pub async fn create_table(db: &aws_sdk_dynamodb::Client, table: &str) {
    db.create_table()
        .table_name(table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("a key schema"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("an attribute definition"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("a stream specification"),
        )
        .send()
        .await
        .expect("create the table in moto");
}

/// Every record of `table`'s stream as moto serves it: (sequence number,
/// eventName, Keys as JSON).
pub async fn stream_records(url: &str, table: &str) -> Vec<(u128, String, String)> {
    let api = SdkStreams::connect_static(&endpoint(url), "test", "test").await;
    let arn = api
        .stream_of_table(table)
        .await
        .expect("the table's stream");
    let mut out = Vec::new();
    let shards = api
        .describe_stream(&arn, None)
        .await
        .expect("shards")
        .shards;
    for shard in shards {
        let mut it = api
            .get_shard_iterator(&arn, &shard.id, &IteratorStart::TrimHorizon)
            .await
            .expect("an iterator");
        loop {
            let page = api.get_records(&it, 1000).await.expect("records");
            let (records, next_iterator) = page.split().expect("a page");
            if records.is_empty() {
                break;
            }
            for r in &records {
                let v: serde_json::Value = serde_json::from_str(r).expect("record JSON");
                out.push((
                    v["dynamodb"]["SequenceNumber"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("a sequence number"),
                    v["eventName"].as_str().unwrap_or_default().to_owned(),
                    v["dynamodb"]["Keys"].to_string(),
                ));
            }
            match next_iterator {
                Some(next) => it = next,
                None => break,
            }
        }
    }
    out
}

/// Changes items of `table` every `pace` until stopped: puts with awkward
/// values, updates, deletes. Returns how many changes it made.
pub async fn write_changes(
    db: aws_sdk_dynamodb::Client,
    table: &str,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> u32 {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let pk = Av::S(format!("item-{} ✓", n % 9));
        let result = match n % 6 {
            5 => db
                .delete_item()
                .table_name(table)
                .key("pk", pk)
                .send()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            3 => db
                .update_item()
                .table_name(table)
                .key("pk", pk)
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", Av::N(format!("{n}.5")))
                .send()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => db
                .put_item()
                .table_name(table)
                .item("pk", pk)
                .item("v", Av::N(n.to_string()))
                .item(
                    "big",
                    Av::N("12345678901234567890123456789012345678".into()),
                )
                .item("text", Av::S(format!("\"quoted\" é 😀 {n}")))
                .item(
                    "blob",
                    Av::B(aws_smithy_types::Blob::new(vec![0, 255, n as u8])),
                )
                .item("tags", Av::Ss(vec!["b".into(), "a".into()]))
                .item(
                    "nested",
                    Av::M([("l".to_owned(), Av::L(vec![Av::Null(true), Av::Bool(true)]))].into()),
                )
                .send()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        result.expect("write to moto");
        n += 1;
        tokio::time::sleep(pace).await;
    }
    n
}
