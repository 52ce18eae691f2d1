//! The HTTP endpoints operators and orchestrators poll:
//!
//! - `/metrics`: every counter and gauge in the Prometheus text format
//!   (`text/plain; version=0.0.4`), after calling the refresh hook so that
//!   computed gauges (lag, time to data loss, checkpoint age) are current;
//! - `/healthz`: `200 ok` while the run loop is alive, that is while it has
//!   called [`Health::beat`] within the last [`STALL_AFTER`] (30 s). It never
//!   fails because AWS or a broker is down: the run loop waits those out
//!   and keeps beating while it does, and restarting the process would not
//!   help. `503` means the loop itself is stuck;
//! - `/readyz`: `200 ready` once positions are loaded, the sinks are open
//!   and every stream has answered once; until then `503` with a body
//!   naming what is still missing. The configuration is valid by
//!   construction: the server starts only after it was validated.
//!
//! Requests are answered on a thread of their own, so a slow scraper can
//! never hold up the run loop; the run loop only stores to atomics in
//! [`Health`], so it never waits for a request either.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Request, Response, Server};

use super::recorder::Handle;

/// How long the run loop may go without [`Health::beat`] before `/healthz`
/// answers 503. Long enough for one slow commit or a throttled call with
/// its retries; short enough that an orchestrator restarts a hung process
/// within a minute or so.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(30);

/// Called before each `/metrics` render to bring computed gauges up to
/// date. It runs on the server thread: it must be quick and must not wait
/// for locks the run loop holds for long.
pub(crate) type Refresh = Box<dyn Fn() + Send + Sync>;

/// Liveness and readiness, shared between the run loop (which sets it) and
/// the server (which reads it). Every method is a single atomic operation.
#[derive(Debug)]
pub(crate) struct Health {
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    last_beat_ms: AtomicU64,
    stall_after: Duration,
    /// Milliseconds since the last sign of life from code waiting on
    /// purpose: [`dynamo_cdc_core::alive`], process-wide.
    signs: fn() -> Option<u64>,
    positions_loaded: AtomicBool,
    sinks_open: AtomicBool,
    streams_answered: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Alive (as if it had just beaten), not yet ready.
    pub(crate) fn new() -> Health {
        Health {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            stall_after: STALL_AFTER,
            signs: dynamo_cdc_core::alive::since_last_sign_ms,
            positions_loaded: AtomicBool::new(false),
            sinks_open: AtomicBool::new(false),
            streams_answered: AtomicBool::new(false),
        }
    }

    /// A `Health` that counts as stalled after `stall_after` instead of 30 s,
    /// deaf to the process-wide signs of life: tests running beside it
    /// (a Kafka sink waiting for a broker that is not there) give them.
    #[cfg(test)]
    fn with_stall_after(stall_after: Duration) -> Health {
        Health {
            stall_after,
            signs: || None,
            ..Health::new()
        }
    }

    /// The run loop is alive. Call it on every turn of the loop, including
    /// while waiting out an unreachable service (at least every few seconds).
    pub(crate) fn beat(&self) {
        let now = millis(self.started.elapsed());
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    /// The checkpoint was read and every sink adopted its positions.
    pub(crate) fn set_positions_loaded(&self) {
        self.positions_loaded.store(true, Ordering::Relaxed);
    }

    /// Every sink is open.
    pub(crate) fn set_sinks_open(&self) {
        self.sinks_open.store(true, Ordering::Relaxed);
    }

    /// Every stream answered its first DescribeStream (a replay source sets
    /// it as soon as its capture is open).
    pub(crate) fn set_streams_answered(&self) {
        self.streams_answered.store(true, Ordering::Relaxed);
    }

    /// `Err(time since the last beat)` when the loop has stalled. A sink
    /// that waits on purpose (for its broker) gives signs of life too.
    fn liveness(&self) -> Result<(), Duration> {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        let mut silent = self.started.elapsed().saturating_sub(last);
        if let Some(ms) = (self.signs)() {
            silent = silent.min(Duration::from_millis(ms));
        }
        if silent > self.stall_after {
            Err(silent)
        } else {
            Ok(())
        }
    }

    /// `Err(what is still missing)` until ready.
    fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let missing: Vec<&'static str> = [
            (&self.positions_loaded, "positions not loaded"),
            (&self.sinks_open, "sinks not open"),
            (&self.streams_answered, "streams not answered yet"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Relaxed))
        .map(|(_, what)| what)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The running server. Dropping it (or calling [`MetricsServer::stop`])
/// stops the server thread and closes the port.
pub(crate) struct MetricsServer {
    local_addr: SocketAddr,
    /// The server answering now: replaced when its accept thread ends
    /// (none while the address is being bound again).
    server: Arc<Mutex<Option<Arc<Server>>>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the server waits before it listens again after its accept
/// thread ended (one failed `accept`, such as with no file descriptors
/// left, ends it): the cause may last a while, so the wait doubles, up to
/// [`LISTEN_AGAIN_AT_MOST`], while listening again keeps failing.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(1);
const LISTEN_AGAIN_AT_MOST: Duration = Duration::from_secs(30);

/// Binds `addr` now and serves `/metrics`, `/healthz` and `/readyz` on a
/// thread of its own until the returned server is dropped.
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission); the
/// message names it.
pub(crate) fn serve(
    addr: SocketAddr,
    handle: Handle,
    health: Arc<Health>,
    refresh: Option<Refresh>,
) -> Result<MetricsServer, io::Error> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    // Bound here rather than inside tiny_http so that the error is an
    // io::Error with its kind, raised before anything else starts.
    let listener = TcpListener::bind(addr).map_err(named)?;
    serve_on(listener, handle, health, refresh).map_err(named)
}

/// [`serve`] on a socket bound already.
fn serve_on(
    listener: TcpListener,
    handle: Handle,
    health: Arc<Health>,
    refresh: Option<Refresh>,
) -> Result<MetricsServer, io::Error> {
    let local_addr = listener.local_addr()?;
    let server = Server::from_listener(listener, None).map_err(io::Error::other)?;
    let server = Arc::new(Mutex::new(Some(Arc::new(server))));
    let stopping = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn({
            let server = server.clone();
            let stopping = stopping.clone();
            move || {
                answer_requests(
                    &server,
                    local_addr,
                    &stopping,
                    &handle,
                    &health,
                    refresh.as_deref(),
                );
            }
        })?;
    Ok(MetricsServer {
        local_addr,
        server,
        stopping,
        thread: Some(thread),
    })
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address actually bound (the real port when asked for port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server thread and closes the port; the same as dropping.
    pub(crate) fn stop(self) {}
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the thread from `recv`; it sees `stopping` and returns,
        // dropping its reference, and ours closes the listener. (A server
        // put in place after `stopping` was set is never waited on.)
        if let Some(server) = current(&self.server) {
            server.unblock();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn current(server: &Mutex<Option<Arc<Server>>>) -> Option<Arc<Server>> {
    server
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn replace(server: &Mutex<Option<Arc<Server>>>, with: Option<Server>) {
    *server
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = with.map(Arc::new);
}

/// Answers requests until stopped. tiny_http's accept thread ends at the
/// first failed `accept` (no file descriptors left, say), after which
/// nothing would be answered again: the server is then made anew on the
/// same address, once it can be, so that `/healthz` does not go silent
/// and have a healthy process restarted.
fn answer_requests(
    server: &Mutex<Option<Arc<Server>>>,
    addr: SocketAddr,
    stopping: &AtomicBool,
    handle: &Handle,
    health: &Health,
    refresh: Option<&(dyn Fn() + Send + Sync)>,
) {
    let mut down_since: Option<Instant> = None;
    let mut wait = LISTEN_AGAIN_AFTER;
    loop {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let Some(serving) = current(server) else {
            std::thread::sleep(wait);
            wait = (wait * 2).min(LISTEN_AGAIN_AT_MOST);
            match TcpListener::bind(addr)
                .and_then(|l| Server::from_listener(l, None).map_err(io::Error::other))
            {
                Ok(fresh) => replace(server, Some(fresh)),
                Err(e) => tracing::debug!(error = %e, "metrics endpoint: cannot listen yet"),
            }
            continue;
        };
        match serving.recv() {
            Ok(request) => {
                wait = LISTEN_AGAIN_AFTER;
                if let Some(since) = down_since.take() {
                    tracing::warn!(
                        after_s = since.elapsed().as_secs(),
                        "metrics endpoint: listening again on {addr}"
                    );
                }
                answer(request, handle, health, refresh);
            }
            Err(_) if stopping.load(Ordering::Relaxed) => return,
            Err(e) => {
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::error!(
                        error = %e,
                        "metrics endpoint: cannot accept connections on {addr}; listening again"
                    );
                }
                // The dead server holds the socket: it is closed before
                // the address is bound again (above).
                drop(serving);
                replace(server, None);
            }
        }
    }
}

fn answer(
    request: Request,
    handle: &Handle,
    health: &Health,
    refresh: Option<&(dyn Fn() + Send + Sync)>,
) {
    let path = request.url().split('?').next().unwrap_or_default();
    let is_read = matches!(
        request.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    );
    let (status, content_type, body) = if !is_read {
        (405, PLAIN, "method not allowed\n".to_owned())
    } else {
        match path {
            "/metrics" => metrics(handle, refresh),
            "/healthz" => match health.liveness() {
                Ok(()) => (200, PLAIN, "ok\n".to_owned()),
                Err(silent) => (
                    503,
                    PLAIN,
                    format!(
                        "run loop stalled: no heartbeat for {} s\n",
                        silent.as_secs()
                    ),
                ),
            },
            "/readyz" => match health.readiness() {
                Ok(()) => (200, PLAIN, "ready\n".to_owned()),
                Err(missing) => (503, PLAIN, format!("not ready: {}\n", missing.join(", "))),
            },
            _ => (404, PLAIN, "not found\n".to_owned()),
        }
    };
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header(content_type));
    // The client may have gone away; nothing to do about it.
    let _ = request.respond(response);
}

const PLAIN: &str = "text/plain; charset=utf-8";
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

fn metrics(
    handle: &Handle,
    refresh: Option<&(dyn Fn() + Send + Sync)>,
) -> (u16, &'static str, String) {
    if let Some(refresh) = refresh {
        // A bug in the hook must not take the endpoint down for good.
        if catch_unwind(AssertUnwindSafe(refresh)).is_err() {
            return (500, PLAIN, "refreshing the metrics failed\n".to_owned());
        }
    }
    (200, EXPOSITION, handle.render())
}

fn header(content_type: &str) -> Header {
    Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a constant, valid header")
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::observe::recorder::PrometheusRecorder;

    /// Sends a plain HTTP/1.0 GET and returns (status, headers, body).
    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn metrics_are_rendered_after_the_refresh_hook() {
        let recorder = PrometheusRecorder::new();
        let lag = metrics::with_local_recorder(
            &recorder,
            || metrics::gauge!("dynamo_cdc_source_lag_seconds", "table" => "orders"),
        );
        let refresh: Refresh = Box::new(move || lag.set(4.5));
        let server = serve(
            local(),
            recorder.handle(),
            Arc::new(Health::new()),
            Some(refresh),
        )
        .unwrap();
        let (status, head, body) = get(server.local_addr(), "/metrics");
        assert_eq!(status, 200);
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert_eq!(
            body,
            "# TYPE dynamo_cdc_source_lag_seconds gauge\n\
             dynamo_cdc_source_lag_seconds{table=\"orders\"} 4.5\n"
        );
    }

    #[test]
    fn a_panicking_refresh_hook_is_a_500_not_a_dead_server() {
        let refresh: Refresh = Box::new(|| panic!("bug in the hook"));
        let server = serve(
            local(),
            PrometheusRecorder::new().handle(),
            Arc::new(Health::new()),
            Some(refresh),
        )
        .unwrap();
        assert_eq!(get(server.local_addr(), "/metrics").0, 500);
        assert_eq!(get(server.local_addr(), "/healthz").0, 200);
    }

    #[test]
    fn readiness_names_what_is_missing_until_everything_is_set() {
        let health = Arc::new(Health::new());
        let server = serve(
            local(),
            PrometheusRecorder::new().handle(),
            health.clone(),
            None,
        )
        .unwrap();
        let addr = server.local_addr();
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!(status, 503);
        assert_eq!(
            body,
            "not ready: positions not loaded, sinks not open, streams not answered yet\n"
        );
        health.set_positions_loaded();
        health.set_sinks_open();
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: streams not answered yet\n")
        );
        health.set_streams_answered();
        let (status, _, body) = get(addr, "/readyz");
        assert_eq!((status, body.as_str()), (200, "ready\n"));
    }

    #[test]
    fn liveness_follows_the_heartbeat() {
        let health = Arc::new(Health::with_stall_after(Duration::from_millis(200)));
        let server = serve(
            local(),
            PrometheusRecorder::new().handle(),
            health.clone(),
            None,
        )
        .unwrap();
        let addr = server.local_addr();
        let (status, _, body) = get(addr, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        std::thread::sleep(Duration::from_millis(400));
        let (status, _, body) = get(addr, "/healthz");
        assert_eq!(status, 503);
        assert!(body.starts_with("run loop stalled"), "{body}");
        health.beat();
        assert_eq!(get(addr, "/healthz").0, 200);
        // Readiness is a separate question: liveness does not need it.
        assert_eq!(get(addr, "/readyz").0, 503);
    }

    #[test]
    fn other_paths_are_404_and_queries_are_ignored() {
        let server = serve(
            local(),
            PrometheusRecorder::new().handle(),
            Arc::new(Health::new()),
            None,
        )
        .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/").0, 404);
        assert_eq!(get(addr, "/metrics/x").0, 404);
        assert_eq!(get(addr, "/healthz?verbose=1").0, 200);
    }

    #[test]
    fn a_port_in_use_is_an_error_naming_the_address() {
        let taken = TcpListener::bind(local()).unwrap();
        let addr = taken.local_addr().unwrap();
        let error = serve(
            addr,
            PrometheusRecorder::new().handle(),
            Arc::new(Health::new()),
            None,
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(
            error
                .to_string()
                .contains(&format!("cannot listen on {addr}")),
            "{error}"
        );
    }

    /// tiny_http's accept thread ends at the first failed `accept`; the
    /// endpoint listens again on the same address rather than go silent.
    #[cfg(target_os = "linux")] // where a listener shut down fails `accept`
    #[test]
    fn an_accept_that_fails_does_not_silence_the_endpoint() {
        use std::os::fd::AsRawFd as _;
        let listener = TcpListener::bind(local()).unwrap();
        let ours = listener.try_clone().unwrap();
        let server = serve_on(
            listener,
            PrometheusRecorder::new().handle(),
            Arc::new(Health::new()),
            None,
        )
        .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz").0, 200);
        // Shut down for reading, a listening socket fails every `accept`
        // (EINVAL): the accept thread ends, as it would on EMFILE.
        // SAFETY: `ours` is an open socket for the whole call.
        #[allow(unsafe_code)]
        let shut = unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_RD) };
        assert_eq!(shut, 0);
        drop(ours);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = TcpStream::connect(addr).is_ok_and(|_| get(addr, "/healthz").0 == 200);
            if answered {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} never answered again");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
    }

    #[test]
    fn dropping_the_server_closes_the_port() {
        let server = serve(
            local(),
            PrometheusRecorder::new().handle(),
            Arc::new(Health::new()),
            None,
        )
        .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz").0, 200);
        server.stop();
        // The accept thread closes the listener just after the stop; allow
        // it a moment rather than racing it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
