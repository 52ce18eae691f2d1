//! The signing proxy on real sockets: an HTTP server of its own (tiny_http)
//! plays the catalog endpoint and keeps every request it receives.
//!
//! The signatures are checked by botocore (`tests/sigv4_botocore.py`), which
//! signs each received request again as an AWS endpoint would; those tests
//! need Python with botocore and are ignored by default (`scripts/test.sh`
//! runs them). The interpreter is `DYNAMO_CDC_PYTHON` (an absolute path: the
//! tests run in the crate's directory), else the workspace's
//! `.venv/bin/python`:
//!
//! ```text
//! DYNAMO_CDC_PYTHON="$PWD/.venv/bin/python" cargo test -p dynamo-cdc-sink-iceberg sigv4 -- --include-ignored
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use iceberg::NamespaceIdent;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;
use crate::config::{CatalogKind, IcebergConfig};

const ACCESS_KEY: &str = "AKIDPROXYTEST";
/// With the characters that need care in a signing key.
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//session+token=";
const REGION: &str = "us-west-2";

/// A request as the endpoint received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    /// Scheme, host and port of the endpoint, then the request target.
    url: String,
    /// Lowercase names, in the order received.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the endpoint answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// An HTTP server on a free loopback port, answering with `route` and
/// keeping every request; stopped when dropped.
struct Endpoint {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    fn start(route: impl Fn(&Received) -> Answer + Send + 'static) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("a test server"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let url = format!("http://127.0.0.1:{port}");
        let received = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, received, url) = (server.clone(), received.clone(), url.clone());
            std::thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    let mut body = Vec::new();
                    request.as_reader().read_to_end(&mut body).unwrap();
                    let got = Received {
                        method: request.method().to_string(),
                        url: format!("{url}{}", request.url()),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| {
                                (
                                    h.field.as_str().as_str().to_ascii_lowercase(),
                                    h.value.to_string(),
                                )
                            })
                            .collect(),
                        body,
                    };
                    let (status, headers, body) = route(&got);
                    received.lock().unwrap().push(got);
                    let mut response =
                        tiny_http::Response::from_data(body).with_status_code(status);
                    for (name, value) in headers {
                        response.add_header(tiny_http::Header::from_bytes(name, value).unwrap());
                    }
                    let _ = request.respond(response);
                }
            })
        };
        Endpoint {
            url,
            received,
            server,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn json(body: &str) -> Answer {
    (
        200,
        vec![("content-type", "application/json".to_owned())],
        body.as_bytes().to_vec(),
    )
}

fn signer(token: Option<&str>) -> Signer {
    let credentials = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        token.map(str::to_owned),
        None,
        "test",
    );
    Signer::new(SharedCredentialsProvider::new(credentials), REGION, "glue")
}

/// A client that goes to the proxy directly, whatever the environment's
/// HTTP_PROXY.
fn client() -> reqwest::Client {
    dynamo_cdc_object_store::install_tls_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Has botocore sign every received request again and compare: whether
/// all agree, and what it said.
fn botocore_verdict(received: &[Received], token: Option<&str>) -> (bool, String) {
    let python = std::env::var_os("DYNAMO_CDC_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sigv4_botocore.py");
    let requests: Vec<_> = received
        .iter()
        .map(|r| {
            serde_json::json!({
                "method": r.method,
                "url": r.url,
                "headers": r.headers,
                "body_hex": r.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    let input = serde_json::json!({
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "token": token,
        "region": REGION,
        "service": "glue",
        "requests": requests,
    });
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): set DYNAMO_CDC_PYTHON to a Python with botocore, \
                 or run scripts/test.sh, which makes .venv",
                python.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let agreed = output.status.success()
        && said.lines().filter(|l| l.starts_with("ok ")).count() == received.len();
    (agreed, said)
}

/// botocore agrees with every signature, and disagrees once a signed part
/// of a request is changed (so its agreement means something).
fn verify_with_botocore(received: &[Received], token: Option<&str>) {
    let (agreed, said) = botocore_verdict(received, token);
    assert!(agreed, "botocore does not agree:\n{said}");
    eprintln!("{said}");
    let last = received.len() - 1;
    let mut tampered = received.to_vec();
    let extra = if tampered[last].url.contains('?') {
        "&x=1"
    } else {
        "?x=1"
    };
    tampered[last].url.push_str(extra);
    assert!(
        !botocore_verdict(&tampered, token).0,
        "botocore agreed with a changed query"
    );
    // (A bodiless request signs the empty body's hash in a header instead.)
    let with_body = received
        .iter()
        .position(|r| !r.body.is_empty())
        .expect("a request with a body");
    let mut tampered = received.to_vec();
    tampered[with_body].body.push(b' ');
    assert!(
        !botocore_verdict(&tampered, token).0,
        "botocore agreed with a changed body"
    );
}

/// Requests of every shape the catalog client sends, each checked by
/// botocore as the endpoint received it: queries with blank values, `+` and
/// escapes, a namespace path with its unit separator, empty and JSON bodies,
/// temporary credentials. A bearer token from the client goes no further.
#[tokio::test]
#[ignore = "needs Python with botocore: DYNAMO_CDC_PYTHON, else .venv/bin/python (scripts/test.sh runs it)"]
async fn signatures_verify_with_botocore() {
    let endpoint = Endpoint::start(|_| json(r#"{"ok":true}"#));
    let proxy = SigningProxy::start(&format!("{}/iceberg", endpoint.url), signer(Some(TOKEN)))
        .await
        .unwrap();
    let base = proxy.catalog_uri().to_owned();
    let client = client();
    let body = r#"{"namespace":["cdc"],"properties":{"owner":"données + more"}}"#;
    let requests = [
        client.get(format!("{base}/v1/config?warehouse=123456789012")),
        client.get(format!(
            "{base}/v1/catalogs/123/namespaces?parent=a%1Fb+c&pageToken=&x=%2F~"
        )),
        client.head(format!("{base}/v1/catalogs/123/namespaces/a%1Fb%20c")),
        client
            .post(format!("{base}/v1/catalogs/123/namespaces"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer not-for-aws")
            .header("x-client-version", "0.14.1")
            .body(body),
        client.delete(format!(
            "{base}/v1/catalogs/123/namespaces/cdc/tables/orders?purgeRequested=true"
        )),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let received = endpoint.received();
    assert_eq!(received.len(), 5);
    assert_eq!(
        received[0].url,
        format!("{}/iceberg/v1/config?warehouse=123456789012", endpoint.url)
    );
    let post = &received[3];
    assert_eq!(post.body, body.as_bytes());
    assert_eq!(post.header("x-amz-content-sha256"), None);
    assert_eq!(
        received[2].header("x-amz-content-sha256"),
        Some(EMPTY_SHA256)
    );
    for r in &received {
        let authorization = r.header("authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPROXYTEST/"),
            "{authorization}"
        );
        assert_eq!(r.header("x-amz-security-token"), Some(TOKEN));
    }
    verify_with_botocore(&received, Some(TOKEN));
}

/// The sink's REST catalog configured with signing reaches the endpoint
/// through the proxy: the config call, a HEAD, a namespace created with a
/// JSON body and a listing under a two-level parent, each signed (long-term
/// credentials this time: no session token).
#[tokio::test]
#[ignore = "needs Python with botocore: DYNAMO_CDC_PYTHON, else .venv/bin/python (scripts/test.sh runs it)"]
async fn a_signed_rest_catalog_reaches_its_endpoint() {
    let endpoint = Endpoint::start(|r| {
        let path = r.url.split_once("/iceberg").map_or("", |(_, p)| p);
        match (
            r.method.as_str(),
            path.split('?').next().unwrap_or_default(),
        ) {
            ("GET", "/v1/config") => {
                json(r#"{"defaults":{},"overrides":{"prefix":"catalogs/123456789012"}}"#)
            }
            ("HEAD", "/v1/catalogs/123456789012/namespaces/cdc") => (404, vec![], vec![]),
            ("POST", "/v1/catalogs/123456789012/namespaces") => {
                json(r#"{"namespace":["cdc"],"properties":{}}"#)
            }
            ("GET", "/v1/catalogs/123456789012/namespaces") => {
                json(r#"{"namespaces":[["cdc","x y","orders"]]}"#)
            }
            _ => (500, vec![], b"unexpected".to_vec()),
        }
    });
    let mut config = IcebergConfig::new(format!("{}/iceberg", endpoint.url), "s3://lake/warehouse");
    config.catalog = CatalogKind::Rest;
    config.properties = BTreeMap::from([
        (SIGV4_ENABLED.to_owned(), "true".to_owned()),
        ("warehouse".to_owned(), "123456789012".to_owned()),
    ]);
    config.validate().unwrap();
    let storage = Arc::new(iceberg::io::LocalFsStorageFactory);
    let connected = crate::catalog::rest(&config, storage, Some(signer(None)))
        .await
        .unwrap();
    let catalog = connected.catalog.clone();
    let cdc = NamespaceIdent::new("cdc".to_owned());
    crate::catalog::ensure_namespace(catalog.as_ref(), &cdc)
        .await
        .unwrap();
    let parent = NamespaceIdent::from_strs(["cdc", "x y"]).unwrap();
    let listed = catalog.list_namespaces(Some(&parent)).await.unwrap();
    assert_eq!(
        listed,
        [NamespaceIdent::from_strs(["cdc", "x y", "orders"]).unwrap()]
    );

    let received = endpoint.received();
    let calls: Vec<String> = received
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.trim_start_matches(&endpoint.url)))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /iceberg/v1/config?warehouse=123456789012",
            "HEAD /iceberg/v1/catalogs/123456789012/namespaces/cdc",
            "POST /iceberg/v1/catalogs/123456789012/namespaces",
            "GET /iceberg/v1/catalogs/123456789012/namespaces?parent=cdc%1Fx+y",
        ]
    );
    assert!(
        received
            .iter()
            .all(|r| r.header("x-amz-security-token").is_none())
    );
    verify_with_botocore(&received, None);
}

/// Reads one HTTP/1.1 answer from `stream`, its body de-chunked; `buf`
/// keeps what was read beyond it.
async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    async fn more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 16 << 10];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the proxy closed the connection mid-answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, headers, length) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        if let httparse::Status::Complete(length) = response.parse(buf).unwrap() {
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>();
            break (response.code.unwrap(), headers, length);
        }
        more(stream, buf).await;
    };
    buf.drain(..length);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let (at, size) = loop {
                if let Ok(httparse::Status::Complete(found)) = httparse::parse_chunk_size(buf) {
                    break found;
                }
                more(stream, buf).await;
            };
            let size = usize::try_from(size).unwrap();
            while buf.len() < at + size + 2 {
                more(stream, buf).await;
            }
            body.extend_from_slice(&buf[at..at + size]);
            buf.drain(..at + size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().unwrap();
        while buf.len() < length {
            more(stream, buf).await;
        }
        body = buf.drain(..length).collect();
    }
    (status, headers, body)
}

/// Two requests on one connection, a large answer streamed back in chunks,
/// the client's bearer token dropped; a path without the secret refused
/// before anything is sent; nothing listening once the proxy is dropped.
#[tokio::test]
async fn answers_stream_back_on_one_connection() {
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let endpoint = {
        let large = large.clone();
        Endpoint::start(move |r| {
            if r.method == "GET" {
                (200, vec![("x-endpoint", "yes".to_owned())], large.clone())
            } else {
                (201, vec![], r.body.clone())
            }
        })
    };
    let proxy = SigningProxy::start(&endpoint.url, signer(None))
        .await
        .unwrap();
    let (authority, path) = proxy
        .catalog_uri()
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let (authority, secret) = (authority.to_owned(), format!("/{path}"));
    let mut stream = TcpStream::connect(&authority).await.unwrap();
    let mut buf = Vec::new();

    let get = format!(
        "GET {secret}/v1/big HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer t\r\n\r\n"
    );
    stream.write_all(get.as_bytes()).await.unwrap();
    let (status, headers, body) = read_answer(&mut stream, &mut buf).await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("x-endpoint".to_owned(), "yes".to_owned())));
    assert!(headers.contains(&("transfer-encoding".to_owned(), "chunked".to_owned())));
    assert!(
        body == large,
        "the large body came back altered ({} bytes)",
        body.len()
    );

    let post = format!(
        "POST {secret}/v1/echo HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    stream.write_all(post.as_bytes()).await.unwrap();
    let (status, headers, body) = read_answer(&mut stream, &mut buf).await;
    assert_eq!((status, body.as_slice()), (201, &b"hello"[..]));
    assert!(headers.contains(&("connection".to_owned(), "close".to_owned())));
    assert_eq!(
        stream.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "closed as asked"
    );

    let refused = client()
        .get(format!("http://{authority}/v1/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let received = endpoint.received();
    assert_eq!(
        received.len(),
        2,
        "the refused request never reached the endpoint"
    );
    assert_eq!(received[0].url, format!("{}/v1/big", endpoint.url));
    assert_eq!(received[1].body, b"hello");
    for r in &received {
        assert!(
            r.header("authorization")
                .unwrap()
                .starts_with("AWS4-HMAC-SHA256 ")
        );
        assert!(r.header("x-amz-date").is_some());
    }

    drop(proxy);
    let mut attempts = 0;
    while TcpStream::connect(&authority).await.is_ok() {
        attempts += 1;
        assert!(
            attempts < 100,
            "still listening after the proxy was dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An endpoint that cannot be reached is answered with 502, saying which.
#[tokio::test]
async fn an_unreachable_endpoint_is_answered_with_502() {
    // Held for the whole test: a port merely released could be handed to
    // the proxy itself, which binds any free port.
    let nowhere = dynamo_cdc_testkit::refused_port();
    let closed = nowhere.port();
    let endpoint = format!("http://127.0.0.1:{closed}/iceberg");
    let proxy = SigningProxy::start(&endpoint, signer(None)).await.unwrap();
    for _ in 0..2 {
        let response = client()
            .get(format!("{}/v1/config", proxy.catalog_uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        let text = response.text().await.unwrap();
        assert!(
            text.contains(&format!("cannot reach http://127.0.0.1:{closed}")),
            "{text}"
        );
    }
}
