//! A Confluent Schema Registry client: register a subject's schema, get its
//! id, frame datums in the Confluent wire format.
//!
//! Registering is idempotent on the registry's side (the same schema under
//! the same subject returns the same id), so ids are cached per
//! `(subject, schema)` and asked for once per process. A widened schema is a
//! new schema: registering it makes a new version, or fails with the
//! registry's compatibility message. A table's schema continues from the
//! one registered last for its topic ([`Registry::latest`]), so a restart
//! does not register a narrower one.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::KafkaSinkError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where the registry is, and how to sign in.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://registry:8081`.
    pub url: String,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password (never logged).
    pub password: Option<dynamo_cdc_core::Secret>,
}

/// A registry client with an id cache.
pub(crate) struct Registry {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    ids: HashMap<(String, String), u32>,
}

impl Registry {
    pub(crate) fn new(config: &RegistryConfig) -> Self {
        let authorization = config.username.as_ref().map(|user| {
            let pass = config.password.as_ref().map_or("", |p| p.expose());
            format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
        });
        // The system's roots, not only the public CAs compiled into the
        // client: registries often sit behind a company's own CA.
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .build()
            .into();
        Registry {
            base: config.url.trim_end_matches('/').to_owned(),
            authorization,
            agent,
            ids: HashMap::new(),
        }
    }

    /// The id of `schema` (Avro JSON text) under `subject`, registering it
    /// when this process has not yet.
    pub(crate) fn id(&mut self, subject: &str, schema: &str) -> Result<u32, KafkaSinkError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        let id = self.register(subject, schema)?;
        tracing::info!(subject, id, "schema registered");
        self.ids.insert(key, id);
        Ok(id)
    }

    /// The schema registered last under `subject`, if any.
    pub(crate) fn latest(&self, subject: &str) -> Result<Option<String>, KafkaSinkError> {
        let path = format!("subjects/{}/versions/latest", encode_path(subject));
        match self.call(subject, &path, None)? {
            // No such subject (40401), or no version left in it (40402).
            Answer::Missing => Ok(None),
            Answer::Found(answer) => Ok(answer["schema"].as_str().map(str::to_owned)),
        }
    }

    fn register(&self, subject: &str, schema: &str) -> Result<u32, KafkaSinkError> {
        let path = format!("subjects/{}/versions", encode_path(subject));
        let body = serde_json::json!({ "schema": schema }).to_string();
        let answer = match self.call(subject, &path, Some(&body))? {
            Answer::Found(answer) => answer,
            Answer::Missing => serde_json::Value::Null,
        };
        answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| KafkaSinkError::Registry {
                subject: subject.to_owned(),
                message: format!("the answer has no schema id: {answer}"),
                transient: false,
            })
    }

    /// A GET of `path`, or a POST of `body` to it. A 404 is [`Answer::Missing`]
    /// for a GET; every other failure is an error, transient when it may
    /// pass (unreachable, 5xx, 408, 429).
    fn call(
        &self,
        subject: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Answer, KafkaSinkError> {
        let fail = |message: String, transient: bool| KafkaSinkError::Registry {
            subject: subject.to_owned(),
            message,
            transient,
        };
        let url = format!("{}/{path}", self.base);
        let sent = match body {
            Some(body) => {
                let mut request = self
                    .agent
                    .post(&url)
                    .header("Content-Type", CONTENT_TYPE)
                    .header("Accept", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.send(body.as_bytes())
            }
            None => {
                let mut request = self.agent.get(&url).header("Accept", CONTENT_TYPE);
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
        };
        let mut response =
            sent.map_err(|e| fail(format!("cannot reach {}: {e}", self.base), true))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(format!("cannot read the answer: {e}"), true))?;
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 404 && body.is_none() {
            return Ok(Answer::Missing);
        }
        if !(200..300).contains(&status) {
            let message = answer["message"]
                .as_str()
                .map_or_else(|| text.chars().take(300).collect(), str::to_owned);
            let transient = status >= 500 || status == 429 || status == 408;
            return Err(fail(format!("HTTP {status}: {message}"), transient));
        }
        Ok(Answer::Found(answer))
    }
}

/// What the registry answered.
enum Answer {
    Found(serde_json::Value),
    Missing,
}

fn encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Confluent wire format's header: magic byte 0 and the schema id
/// (big-endian); the Avro binary follows it in the same buffer, which has
/// room for `capacity` bytes in all.
pub(crate) fn header(id: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity.max(5));
    write_header(&mut out, id);
    out
}

/// The wire format's header, appended to `out`.
pub(crate) fn write_header(out: &mut Vec<u8>, id: u32) {
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_paths() {
        let mut framed = header(258, 0);
        framed.push(7);
        assert_eq!(framed, [0, 0, 0, 1, 2, 7]);
        assert_eq!(encode_path("cdc.orders-value"), "cdc.orders-value");
        assert_eq!(encode_path("a/b c"), "a%2Fb%20c");
    }
}
