//! The simulator's HTTP/1.1 transport: a thread per connection, keep-alive,
//! request bodies sized by `Content-Length` (or chunked), answers sized by
//! `Content-Length`.
//!
//! It is written out here rather than taken from a pooled server library
//! because such a pool parks one thread per keep-alive connection and can
//! miss a wake-up when connections arrive in a burst: the newcomer then
//! waits until some idle connection closes, which the SDK's pool does only
//! after 90 s. Concurrent clients (several lease holders starting at once)
//! hit exactly that. A thread per connection cannot starve one.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a blocked read waits before looking whether the server stops.
const POLL: Duration = Duration::from_millis(100);
/// The most a request line and headers may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most a request body may take.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A request as the handler sees it.
pub(crate) struct Request {
    /// Header names in lower case, with their values.
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler answers.
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A listening server; stops accepting when dropped, and its connections
/// close within [`POLL`] once idle.
pub(crate) struct Server {
    port: u16,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub(crate) fn start(handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                let stop = stop.clone();
                std::thread::spawn(move || serve_connection(stream, &*handler, &stop));
            }
        });
        Server {
            port,
            stopping,
            accept: Some(accept),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler, stopping: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut conn = Connection {
        stream,
        buf: Vec::new(),
        stopping,
    };
    loop {
        let (request, keep_alive) = match conn.read_request() {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(message) => {
                let answer = Answer {
                    status: 400,
                    content_type: "text/plain",
                    body: message,
                };
                let _ = conn.write(&answer, false);
                return;
            }
        };
        // A stopped server answers nothing more, as if it were gone.
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let answer = handler(&request);
        if conn.write(&answer, keep_alive).is_err() || !keep_alive {
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

struct Connection<'a> {
    stream: TcpStream,
    /// Bytes read and not yet consumed (a pipelined request's start).
    buf: Vec<u8>,
    stopping: &'a AtomicBool,
}

impl Connection<'_> {
    /// Reads more bytes into the buffer; `false` when the peer closed, the
    /// connection failed, or the server stops while nothing is pending.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The next request and whether the connection stays open after it;
    /// `None` when the connection ends cleanly; an error for a request
    /// that cannot be read (answered 400, then the connection closes).
    fn read_request(&mut self) -> Result<Option<(Request, bool)>, String> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            if self.buf.len() > MAX_HEAD {
                return Err("request head too large".into());
            }
            if !self.fill() {
                return Ok(None);
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let version = request_line.rsplit(' ').next().unwrap_or_default();
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Err(format!("unsupported request line {request_line:?}")),
        };
        let headers = lines
            .map(|line| {
                line.split_once(':')
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .ok_or_else(|| format!("malformed header {line:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut request = Request {
            headers,
            body: Vec::new(),
        };
        let connection = request
            .header("connection")
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let keep_alive = if http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        if request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|e| e.to_string())?;
        }
        let chunked = request
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        request.body = if chunked {
            self.chunked_body()?
        } else {
            let length = match request.header("content-length") {
                None => 0,
                Some(v) => v
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            };
            self.exactly(length)?
        };
        Ok(Some((request, keep_alive)))
    }

    /// The next `n` bytes.
    fn exactly(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if n > MAX_BODY {
            return Err(format!("request body of {n} bytes is too large"));
        }
        while self.buf.len() < n {
            if !self.fill() {
                return Err("the connection ended inside a request body".into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The next CRLF-terminated line, without its CRLF.
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || !self.fill() {
                return Err("a chunked body ended inside a chunk header".into());
            }
        }
    }

    fn chunked_body(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size_text = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err("chunked request body is too large".into());
            }
            body.extend(self.exactly(size)?);
            if !self.line()?.is_empty() {
                return Err("a chunk is longer than its size".into());
            }
        }
    }

    fn write(&mut self, answer: &Answer, keep_alive: bool) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
            answer.status,
            reason(answer.status),
            answer.content_type,
            answer.body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            },
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(answer.body.as_bytes());
        self.stream.write_all(&out)?;
        self.stream.flush()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Server {
        Server::start(Arc::new(|r: &Request| Answer {
            status: 200,
            content_type: "text/plain",
            body: format!(
                "{}:{}",
                r.header("X-Test").unwrap_or("-"),
                String::from_utf8_lossy(&r.body)
            ),
        }))
    }

    fn exchange(port: u16, raw: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn keep_alive_pipelining_and_chunked_bodies() {
        let server = echo();
        let out = exchange(
            server.port(),
            "POST / HTTP/1.1\r\nx-test: a\r\nContent-Length: 3\r\n\r\nabc\
             POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1;x=y\r\nf\r\n0\r\n\r\n\
             POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        let answers: Vec<&str> = out.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
        assert_eq!(answers.len(), 3, "{out}");
        assert!(answers[0].ends_with("\r\n\r\na:abc"), "{out}");
        assert!(answers[1].ends_with("\r\n\r\n-:def"), "{out}");
        assert!(answers[2].contains("Connection: close"), "{out}");
    }

    #[test]
    fn a_malformed_request_is_answered_400() {
        let server = echo();
        let out = exchange(
            server.port(),
            "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
        let out = exchange(server.port(), "garbage\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }

    #[test]
    fn a_stopped_server_answers_nothing() {
        let server = echo();
        let port = server.port();
        let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
        drop(server);
        // The connection was accepted before the stop; it gets no answer.
        let _ = open.write_all(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let mut out = String::new();
        let _ = open.read_to_string(&mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn many_connections_at_once_are_all_served() {
        let server = echo();
        let port = server.port();
        // Idle keep-alive connections must not hold up new ones.
        let idle: Vec<TcpStream> = (0..16)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let threads: Vec<_> = (0..32)
            .map(|i| {
                std::thread::spawn(move || {
                    exchange(
                        port,
                        &format!(
                            "POST / HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{}",
                            i % 10
                        ),
                    )
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert!(t.join().unwrap().ends_with(&format!("-:{}", i % 10)));
        }
        drop(idle);
    }
}
