//! The proxy's side of HTTP/1.1: reading the catalog client's requests
//! (heads parsed with httparse, bodies of a known length, one request after
//! another on a kept connection), choosing the headers that go on, and
//! writing answers back with their bodies streamed in chunks.

use std::io;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Bounds on what the proxy reads of a request.
const MAX_HEADERS: usize = 64;
const MAX_HEAD_BYTES: usize = 64 << 10;
const MAX_BODY_BYTES: usize = 64 << 20;

/// Hop-by-hop headers (RFC 9110, section 7.6.1): they concern one
/// connection, and neither requests nor answers carry them further.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that are not forwarded either: the proxy's host, the
/// body's length (the upstream client sets its own), `expect` (the whole
/// body is read first), and what the signature sets. An `Authorization`
/// from the client (a bearer token) would replace the signature, which is
/// the authentication here.
const NOT_FORWARDED: [&str; 7] = [
    "host",
    "content-length",
    "expect",
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// An answer the proxy gives itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(super) enum Unreadable {
    /// The connection failed or closed mid-request: nothing to answer.
    Gone,
    /// A request the proxy does not take: answered, then closed.
    Refused(Refusal),
}

/// A request head as the catalog client sent it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) method: String,
    /// The request target: path and query.
    pub(super) target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(super) minor: u8,
    /// Names in lowercase, values trimmed, in the order sent.
    pub(super) headers: Vec<(String, String)>,
}

impl Head {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body's length, from `Content-Length`. Chunked bodies are refused:
    /// the catalog client sends JSON of known length.
    fn body_length(&self) -> Result<usize, Refusal> {
        if self.values("transfer-encoding").next().is_some() {
            return Err(Refusal::new(
                501,
                "the SigV4 proxy takes request bodies with a Content-Length only",
            ));
        }
        let mut lengths = self.values("content-length");
        let Some(first) = lengths.next() else {
            return Ok(0);
        };
        if lengths.any(|other| other != first) {
            return Err(Refusal::new(400, "conflicting Content-Length headers"));
        }
        let length: usize = first
            .parse()
            .map_err(|_| Refusal::new(400, format!("Content-Length `{first}` is not a length")))?;
        if length > MAX_BODY_BYTES {
            return Err(Refusal::new(
                413,
                format!(
                    "a request body of {length} bytes is over the SigV4 proxy's {MAX_BODY_BYTES}"
                ),
            ));
        }
        Ok(length)
    }

    /// Whether the connection closes after the answer: HTTP/1.0 always (its
    /// answers end with the connection), HTTP/1.1 when the client asks.
    pub(super) fn closes(&self) -> bool {
        self.minor == 0
            || self
                .values("connection")
                .flat_map(|v| v.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case("close"))
    }
}

/// Parses a request head at the start of `buf`: `None` while it is
/// incomplete, else the head and its length in bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Refusal::new(431, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too many request headers"));
        }
        Err(e) => return Err(Refusal::new(400, format!("malformed request: {e}"))),
    };
    let mut headers = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| Refusal::new(400, format!("the {} header is not UTF-8", header.name)))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let head = Head {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        minor: request.version.unwrap_or(1),
        headers,
    };
    Ok(Some((head, length)))
}

/// The lowercase header names a `Connection` header lists: hop-by-hop too.
fn connection_listed<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The client's headers that go on to the endpoint (and are signed).
pub(super) fn forwarded_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let listed = connection_listed(
        headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .map(|(_, v)| v.as_bytes()),
    );
    headers
        .iter()
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str())
                && !NOT_FORWARDED.contains(&name.as_str())
                && !listed.contains(name)
        })
        .cloned()
        .collect()
}

/// The endpoint's headers that go back to the client: not the hop-by-hop
/// ones, nor `content-length` (the proxy frames the body itself).
fn returned_headers(headers: &reqwest::header::HeaderMap) -> Vec<(&str, &[u8])> {
    let listed = connection_listed(
        headers
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !HOP_BY_HOP.contains(&name)
                && name != "content-length"
                && !listed.iter().any(|l| l == name)
        })
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect()
}

/// A request read whole.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) head: Head,
    pub(super) body: Bytes,
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: an answer to HEAD, 1xx, 204, 304.
    None,
    /// HTTP/1.1: chunks, streamed as they come.
    Chunked,
    /// HTTP/1.0: the body ends with the connection.
    UntilClose,
}

impl Framing {
    fn of(method: &str, minor: u8, status: u16) -> Self {
        if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::None
        } else if minor == 0 {
            Framing::UntilClose
        } else {
            Framing::Chunked
        }
    }
}

/// One connection from the catalog client.
pub(super) struct Connection {
    stream: TcpStream,
    /// Read but not yet used.
    buf: BytesMut,
}

impl Connection {
    pub(super) fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            buf: BytesMut::with_capacity(8 << 10),
        }
    }

    /// The next request, read whole; `None` when the client closed the
    /// connection between requests.
    pub(super) async fn read_request(&mut self) -> Result<Option<Incoming>, Unreadable> {
        let (head, body_length) = loop {
            if let Some((head, length)) = parse_head(&self.buf).map_err(Unreadable::Refused)? {
                self.buf.advance(length);
                let body_length = head.body_length().map_err(Unreadable::Refused)?;
                break (head, body_length);
            }
            if self.fill(8 << 10).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Unreadable::Gone)
                };
            }
        };
        while self.buf.len() < body_length {
            if self.fill(body_length - self.buf.len()).await? == 0 {
                return Err(Unreadable::Gone);
            }
        }
        let body = self.buf.split_to(body_length).freeze();
        Ok(Some(Incoming { head, body }))
    }

    async fn fill(&mut self, want: usize) -> Result<usize, Unreadable> {
        self.buf.reserve(want);
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|_| Unreadable::Gone)
    }

    pub(super) async fn write_refusal(
        &mut self,
        refusal: &Refusal,
        closes: bool,
    ) -> io::Result<()> {
        let body = refusal.message.as_bytes();
        let mut out = status_line(refusal.status, "");
        push_header(&mut out, "content-type", b"text/plain; charset=utf-8");
        push_header(
            &mut out,
            "content-length",
            body.len().to_string().as_bytes(),
        );
        if closes {
            push_header(&mut out, "connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.stream.write_all(&out).await
    }

    /// Writes the endpoint's answer, its body streamed as it comes.
    pub(super) async fn write_response(
        &mut self,
        mut response: reqwest::Response,
        head: &Head,
        closes: bool,
    ) -> io::Result<()> {
        let status = response.status();
        let framing = Framing::of(&head.method, head.minor, status.as_u16());
        let mut out = status_line(status.as_u16(), status.canonical_reason().unwrap_or(""));
        for (name, value) in returned_headers(response.headers()) {
            push_header(&mut out, name, value);
        }
        if framing == Framing::Chunked {
            push_header(&mut out, "transfer-encoding", b"chunked");
        }
        if closes {
            push_header(&mut out, "connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        if framing == Framing::None {
            return Ok(());
        }
        while let Some(chunk) = response.chunk().await.map_err(io::Error::other)? {
            if chunk.is_empty() {
                continue;
            }
            if framing == Framing::Chunked {
                let size = format!("{:x}\r\n", chunk.len());
                self.stream.write_all(size.as_bytes()).await?;
                self.stream.write_all(&chunk).await?;
                self.stream.write_all(b"\r\n").await?;
            } else {
                self.stream.write_all(&chunk).await?;
            }
        }
        if framing == Framing::Chunked {
            self.stream.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }
}

fn status_line(status: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} {reason}\r\n").into_bytes()
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_replaced_headers_are_not_forwarded() {
        let given: Vec<(String, String)> = [
            ("host", "127.0.0.1:5000"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("authorization", "Bearer t"),
            ("x-amz-date", "20200101T000000Z"),
            ("x-amz-security-token", "old"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("content-length", "2"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("x-client-version", "0.14.1"),
            ("user-agent", "iceberg-rs/0.10.1"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let forwarded = forwarded_headers(&given);
        let kept: Vec<&str> = forwarded.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(kept, ["content-type", "x-client-version", "user-agent"]);

        let mut answer = reqwest::header::HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("etag", "\"a\""),
        ] {
            answer.append(
                reqwest::header::HeaderName::from_static(name),
                reqwest::header::HeaderValue::from_static(value),
            );
        }
        let returned: Vec<&str> = returned_headers(&answer).iter().map(|(n, _)| *n).collect();
        assert_eq!(returned, ["content-type", "etag"]);
    }

    #[test]
    fn request_heads_parse_incrementally() {
        let text = b"POST /s/v1/namespaces?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-A:  b \r\n\r\n{}";
        assert_eq!(parse_head(&text[..20]), Ok(None));
        let (head, length) = parse_head(text).unwrap().unwrap();
        assert_eq!(length, text.len() - 2);
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/s/v1/namespaces?x=1");
        assert_eq!(head.headers[2], ("x-a".to_owned(), "b".to_owned()));
        assert_eq!(head.body_length(), Ok(2));
        assert!(!head.closes());
        assert_eq!(
            parse_head(b"GET\0 / HTTP/1.1\r\n\r\n").unwrap_err().status,
            400
        );
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(parse_head(&long).unwrap_err().status, 431);
    }

    fn head(minor: u8, headers: &[(&str, &str)]) -> Head {
        Head {
            method: "GET".to_owned(),
            target: "/".to_owned(),
            minor,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn bodies_need_one_content_length() {
        assert_eq!(head(1, &[]).body_length(), Ok(0));
        let chunked = head(1, &[("transfer-encoding", "chunked")]);
        assert_eq!(chunked.body_length().unwrap_err().status, 501);
        let twice = head(1, &[("content-length", "1"), ("content-length", "2")]);
        assert_eq!(twice.body_length().unwrap_err().status, 400);
        assert_eq!(
            head(1, &[("content-length", "x")])
                .body_length()
                .unwrap_err()
                .status,
            400
        );
        let big = (MAX_BODY_BYTES + 1).to_string();
        assert_eq!(
            head(1, &[("content-length", &big)])
                .body_length()
                .unwrap_err()
                .status,
            413
        );
    }

    #[test]
    fn connections_close_when_asked_or_on_http_1_0() {
        assert!(!head(1, &[("connection", "keep-alive")]).closes());
        assert!(head(1, &[("connection", "te, Close")]).closes());
        assert!(head(0, &[("connection", "keep-alive")]).closes());
        assert_eq!(Framing::of("GET", 1, 200), Framing::Chunked);
        assert_eq!(Framing::of("HEAD", 1, 200), Framing::None);
        assert_eq!(Framing::of("DELETE", 1, 204), Framing::None);
        assert_eq!(Framing::of("GET", 0, 200), Framing::UntilClose);
    }
}
