//! What an object-store failure means for the run.
//!
//! - A name that already exists when it is created: another writer
//!   committed it (a collision). Transient: the run starts over and learns
//!   the positions again from the listed names.
//! - Access denied, bad credentials, or a bucket that does not exist: fatal.
//!   Stores are checked at open (a list of the prefix), so these stop the
//!   run before any change is read.
//! - A client that cannot be built from the settings or on this machine (a
//!   malformed endpoint, no CA certificates to trust), a bucket in another
//!   region than the one configured, or a request the store does not
//!   support: fatal.
//! - Everything else (throttling such as S3's `SlowDown`, 5xx, a dropped
//!   connection, expired temporary credentials): transient, after
//!   object_store's own retries.
//!
//! object_store turns HTTP 401, 403 and 404 into typed errors for object
//! requests, but leaves list errors as `Generic` with the service's answer
//! in the text. The service's error codes (`NoSuchBucket`, `AccessDenied`,
//! ...) are part of each cloud's API, so they are matched there, as the
//! service gives them (the text names the object too).

use std::error::Error as _;

use dynamo_cdc_core::SinkError;

/// What kind of failure it is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The name exists already: another writer committed it.
    Collision,
    /// No permission, or credentials the store refuses.
    Denied,
    /// The bucket (or container) does not exist.
    NoBucket,
    /// No client can be built: the settings (a malformed endpoint, a
    /// missing Azure account) or the machine (no CA certificates to trust)
    /// do not allow one. The source says which.
    Settings,
    /// May pass: throttling, 5xx, network, expiring credentials.
    Passing,
}

/// An object-store operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(*.class, .operation, .object, .bucket))]
pub struct ObjectError {
    /// What kind of failure.
    pub class: FailureClass,
    /// What was being done (`list`, `create`, `upload`, `read`).
    pub operation: &'static str,
    /// The object or prefix, as a URL.
    pub object: String,
    /// The bucket, as a URL (`s3://lake`).
    pub bucket: String,
    /// object_store's error (boxed: it is large, and errors are rare).
    #[source]
    pub source: Box<object_store::Error>,
}

fn describe(class: FailureClass, operation: &str, object: &str, bucket: &str) -> String {
    match class {
        FailureClass::Collision => {
            format!("cannot {operation} {object}: it already exists, another writer committed it")
        }
        FailureClass::Denied => format!(
            "cannot {operation} {object}: access to bucket {bucket} denied (check the credentials and their permissions)"
        ),
        FailureClass::NoBucket => {
            format!("cannot {operation} {object}: bucket {bucket} does not exist")
        }
        FailureClass::Settings | FailureClass::Passing => format!("cannot {operation} {object}"),
    }
}

impl ObjectError {
    /// Whether waiting and starting over may help.
    pub fn is_transient(&self) -> bool {
        matches!(self.class, FailureClass::Collision | FailureClass::Passing)
    }
}

impl From<ObjectError> for SinkError {
    fn from(e: ObjectError) -> Self {
        if e.is_transient() {
            SinkError::transient(e)
        } else {
            SinkError::fatal(e)
        }
    }
}

/// Service error codes meaning the bucket or container is missing.
const NO_BUCKET: &[&str] = &["NoSuchBucket", "ContainerNotFound"];

/// Service error codes meaning no permission or refused credentials.
/// (`ExpiredToken` is not among them: temporary credentials are refreshed.)
const DENIED: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthenticationFailed",
];

/// Service error codes meaning a setting that will not work however long
/// the run waits: a bucket in another region than the one configured, or a
/// request the store does not support (`If-None-Match` on some
/// S3-compatible stores, HTTP 501).
const SETTINGS: &[&str] = &[
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "NotImplemented",
];

/// Service error codes of a 401 or 403 that may pass: a clock that is off,
/// temporary credentials or a token that expired (they are refreshed).
const PASSING_DENIALS: &[&str] = &[
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidAuthenticationInfo",
];

/// Words that are not a service's code but say the same: a service's
/// message, and ours and object_store's own. They hold spaces, which no
/// object name the sinks write does.
const PHRASES: &[(&str, FailureClass)] = &[
    (
        "The specified bucket does not exist",
        FailureClass::NoBucket,
    ),
    // No credentials anywhere in the chain (see `aws_chain`).
    ("NoCredentials: ", FailureClass::Denied),
    // object_store's words for a redirect it cannot follow.
    ("incorrectly configured region", FailureClass::Settings),
];

/// Classifies object_store's error (see the module docs). A code counts
/// only as the service gives it (`<Code>AccessDenied</Code>`, or a JSON
/// string): the text also names the request's URL and object, and a table
/// called `AccessDeniedEvents` is no refusal.
pub fn classify(error: &object_store::Error) -> FailureClass {
    use object_store::Error as E;
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(" / ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    let answered = |code: &str| {
        text.contains(&format!("<Code>{code}</Code>")) || text.contains(&format!("\"{code}\""))
    };
    match error {
        E::AlreadyExists { .. } | E::Precondition { .. } => return FailureClass::Collision,
        // A 401 or 403 (a HEAD request's has no body to say why), unless
        // the service says it passes.
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            return if PASSING_DENIALS.iter().any(|c| answered(c)) {
                FailureClass::Passing
            } else {
                FailureClass::Denied
            };
        }
        E::NotImplemented { .. } | E::NotSupported { .. } | E::UnknownConfigurationKey { .. } => {
            return FailureClass::Settings;
        }
        _ => {}
    }
    if let Some((_, class)) = PHRASES.iter().find(|(words, _)| text.contains(words)) {
        *class
    } else if NO_BUCKET.iter().any(|c| answered(c)) {
        FailureClass::NoBucket
    } else if DENIED.iter().any(|c| answered(c)) {
        FailureClass::Denied
    } else if SETTINGS.iter().any(|c| answered(c)) {
        FailureClass::Settings
    } else {
        FailureClass::Passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(body: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: body.to_owned().into(),
        }
    }

    #[test]
    fn service_codes_decide_the_class() {
        let code = |body: &str| classify(&generic(body));
        assert_eq!(code("403 <Code>AccessDenied</Code>"), FailureClass::Denied);
        assert_eq!(
            code("404 <Code>NoSuchBucket</Code>"),
            FailureClass::NoBucket
        );
        assert_eq!(code("503 <Code>SlowDown</Code>"), FailureClass::Passing);
        assert_eq!(code("400 <Code>ExpiredToken</Code>"), FailureClass::Passing);
        assert_eq!(
            code("error sending request: connection refused"),
            FailureClass::Passing
        );
        let exists = object_store::Error::AlreadyExists {
            path: "a".into(),
            source: "exists".into(),
        };
        assert_eq!(classify(&exists), FailureClass::Collision);
        // A 403 or 401 without a body, as on a HEAD request.
        let denied = object_store::Error::PermissionDenied {
            path: "cdc/t".into(),
            source: "403".into(),
        };
        assert_eq!(classify(&denied), FailureClass::Denied);
        // Settings no wait will mend.
        assert_eq!(
            code("301 <Code>PermanentRedirect</Code>"),
            FailureClass::Settings
        );
        assert_eq!(
            code(
                "Received redirect without LOCATION, this normally indicates an incorrectly \
                 configured region"
            ),
            FailureClass::Settings
        );
        let unsupported = object_store::Error::NotImplemented {
            operation: "put_opts with PutMode::Create".into(),
            implementer: "S3".into(),
        };
        assert_eq!(classify(&unsupported), FailureClass::Settings);
        assert_eq!(
            code("501 Not Implemented: <Code>NotImplemented</Code>"),
            FailureClass::Settings
        );
    }

    /// The text names the request's URL and object: a table or file named
    /// with a code's letters does not make a passing failure fatal.
    #[test]
    fn codes_inside_names_do_not_count() {
        let code = |body: &str| classify(&generic(body));
        for name in [
            "AccessDeniedEvents",
            "AccessDenied",
            "NoSuchBucket-log",
            "x_AccessDenied",
            "orders(AccessDenied)",
            "x:NoSuchBucket",
        ] {
            let body = format!(
                "Error performing PUT http://127.0.0.1:1/lake/cdc/{name}/date=2024-01-01/s_1.parquet \
                 in 1s - Server returned non-2xx status code: 503 <Code>SlowDown</Code>"
            );
            assert_eq!(code(&body), FailureClass::Passing, "{name}");
        }
        let body = "Error performing GET http://h/lake/cdc/AccessDeniedEvents/x: 403 Forbidden: \
                    <Error><Code>AccessDenied</Code></Error>";
        assert_eq!(code(body), FailureClass::Denied);
        assert_eq!(
            code("NoCredentials: the AWS credential chain is empty"),
            FailureClass::Denied
        );
        // A service answering in JSON.
        assert_eq!(
            code(r#"403 Forbidden: {"error":{"code":"AuthorizationFailure"}}"#),
            FailureClass::Denied
        );
    }

    /// A 401 or 403 with the service's reason is judged by it.
    #[test]
    fn a_denial_with_a_reason_that_passes_is_not_fatal() {
        let denied = |body: &str| object_store::Error::PermissionDenied {
            path: "cdc/t".into(),
            source: body.to_owned().into(),
        };
        assert_eq!(
            classify(&denied(
                "403 Forbidden: <Error><Code>RequestTimeTooSkewed</Code></Error>"
            )),
            FailureClass::Passing
        );
        assert_eq!(
            classify(&denied(
                "403 Forbidden: <Error><Code>AccessDenied</Code></Error>"
            )),
            FailureClass::Denied
        );
        // A reason this version does not know (a storage firewall, say).
        assert_eq!(
            classify(&denied(
                "403 Forbidden: <Error><Code>AuthorizationSourceIPMismatch</Code></Error>"
            )),
            FailureClass::Denied
        );
    }

    /// An error on `object` in the bucket `s3://lake`.
    fn error(
        class: FailureClass,
        operation: &'static str,
        object: &str,
        body: &str,
    ) -> ObjectError {
        ObjectError {
            class,
            operation,
            object: object.into(),
            bucket: "s3://lake".into(),
            source: Box::new(generic(body)),
        }
    }

    #[test]
    fn messages_name_the_object_and_the_bucket() {
        let e = error(
            FailureClass::Denied,
            "list",
            "s3://lake/cdc/",
            "AccessDenied",
        );
        assert_eq!(
            e.to_string(),
            "cannot list s3://lake/cdc/: access to bucket s3://lake denied (check the credentials and their permissions)"
        );
        assert!(!e.is_transient());
        let e = error(
            FailureClass::Collision,
            "commit",
            "s3://lake/cdc/t/x.parquet",
            "exists",
        );
        assert!(e.to_string().contains("another writer committed it"), "{e}");
        assert!(e.is_transient());
        let e = error(
            FailureClass::Settings,
            "configure a client for",
            "s3://lake/cdc",
            "No CA certificates were loaded from the system",
        );
        assert_eq!(e.to_string(), "cannot configure a client for s3://lake/cdc");
        assert!(!e.is_transient());
    }
}
