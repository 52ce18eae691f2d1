//! A Schema Registry double: the subset of Confluent's REST API a producer
//! and a consumer use, on a loopback port.
//!
//! - `POST /subjects/{subject}/versions` registers a schema (the same text
//!   under the same subject keeps its id; ids are shared across subjects
//!   for the same text, as Confluent does);
//! - `GET /schemas/ids/{id}` returns a schema by id;
//! - `GET /subjects/{subject}/versions` lists a subject's versions.
//!
//! [`RegistryDouble::refuse_new_versions`] makes a subject answer a new
//! schema with HTTP 409 and Confluent's incompatibility message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    /// Schema text by id.
    schemas: Vec<String>,
    /// Versions (schema ids) by subject.
    subjects: BTreeMap<String, Vec<u32>>,
    refuse: BTreeSet<String>,
    /// (method, path) of every request, for assertions.
    requests: Vec<(String, String)>,
}

/// The running double; stops when dropped.
pub struct RegistryDouble {
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    addr: std::net::SocketAddr,
    stopping: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl RegistryDouble {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("a socket address"))
            .expect("bind a loopback port")
    }

    /// Starts on `addr` (port 0 picks a free one), for `dynamo-cdc-gen
    /// registry`, which serves the double to other processes.
    ///
    /// # Errors
    /// When `addr` cannot be bound (in use, not a local address).
    pub fn start_on(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(std::io::Error::other)?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let state = Arc::new(Mutex::new(State::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = {
            let (server, state, stopping) = (server.clone(), state.clone(), stopping.clone());
            std::thread::spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(request)) => serve(&state, request),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        Ok(RegistryDouble {
            state,
            server,
            addr,
            stopping,
            worker: Some(worker),
        })
    }

    /// `http://HOST:PORT`; loopback when listening on every address.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A schema's text by id.
    pub fn schema(&self, id: u32) -> Option<String> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.state().schemas.get(index).cloned()
    }

    /// The schema ids registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        self.state()
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }

    /// From now on, a new schema for `subject` is refused as incompatible.
    pub fn refuse_new_versions(&self, subject: &str) {
        self.state().refuse.insert(subject.to_owned());
    }

    /// Every request so far as `(method, path)`.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state().requests.clone()
    }
}

impl Drop for RegistryDouble {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn serve(state: &Mutex<State>, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_owned();
    let path = request.url().to_owned();
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let (status, answer) = {
        let mut st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.requests.push((method.clone(), path.clone()));
        route(&mut st, &method, &path, &body)
    };
    let header = tiny_http::Header::from_bytes(
        &b"Content-Type"[..],
        &b"application/vnd.schemaregistry.v1+json"[..],
    )
    .expect("a valid header");
    let _ = request.respond(
        tiny_http::Response::from_string(answer.to_string())
            .with_status_code(status)
            .with_header(header),
    );
}

fn route(st: &mut State, method: &str, path: &str, body: &str) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => {
            let subject = decode(subject);
            let Some(schema) = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["schema"].as_str().map(str::to_owned))
            else {
                return error(422, 42201, "Invalid schema");
            };
            if serde_json::from_str::<Value>(&schema).is_err() {
                return error(422, 42201, "Invalid schema: not JSON");
            }
            let existing = st
                .schemas
                .iter()
                .position(|s| *s == schema)
                .map(|i| i as u32 + 1);
            let versions = st.subjects.get(&subject).cloned().unwrap_or_default();
            let known = existing.is_some_and(|id| versions.contains(&id));
            if !known && !versions.is_empty() && st.refuse.contains(&subject) {
                return refuse(&subject);
            }
            let id = existing.unwrap_or_else(|| {
                st.schemas.push(schema);
                st.schemas.len() as u32
            });
            if !known {
                st.subjects.entry(subject).or_default().push(id);
            }
            (200, json!({ "id": id }))
        }
        ("GET", ["schemas", "ids", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| st.schemas.get(i.checked_sub(1)?))
        {
            Some(schema) => (200, json!({ "schema": schema })),
            None => error(404, 40403, "Schema not found"),
        },
        ("GET", ["subjects", subject, "versions", "latest"]) => {
            match st.subjects.get(&decode(subject)).and_then(|v| v.last()) {
                Some(id) => (
                    200,
                    json!({ "id": id, "schema": st.schemas[*id as usize - 1] }),
                ),
                None => error(404, 40401, "Subject not found"),
            }
        }
        ("GET", ["subjects", subject, "versions"]) => match st.subjects.get(&decode(subject)) {
            Some(v) => (200, json!((1..=v.len()).collect::<Vec<_>>())),
            None => error(404, 40401, "Subject not found"),
        },
        _ => error(404, 404, "Not found"),
    }
}

fn refuse(subject: &str) -> (u16, Value) {
    error(
        409,
        409,
        &format!(
            "Schema being registered is incompatible with an earlier schema for subject \"{subject}\""
        ),
    )
}

fn error(status: u16, code: u32, message: &str) -> (u16, Value) {
    (status, json!({ "error_code": code, "message": message }))
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
