//! What an object-store failure means for the run.
//!
//! - A name that already exists when it is created: another writer
//!   committed it (a collision). Transient: the run starts over and learns
//!   the positions again from the listed names.
//! - Access denied, bad credentials, or a bucket that does not exist: fatal.
//!   Stores are checked at open (a list of the prefix), so these stop the
//!   run before any change is read.
//! - A client that cannot be built from the settings or on this machine (a
//!   malformed endpoint, no CA certificates to trust): fatal, at open.
//! - Everything else (throttling such as S3's `SlowDown`, 5xx, a dropped
//!   connection, expired temporary credentials): transient, after
//!   object_store's own retries.
//!
//! object_store turns HTTP 403 and 404 into typed errors for object
//! requests, but leaves list errors as `Generic` with the service's answer
//! in the text. The service's error codes (`NoSuchBucket`, `AccessDenied`,
//! ...) are part of each cloud's API, so they are matched there.

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
const NO_BUCKET: &[&str] = &[
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified bucket does not exist",
];

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
    // No credentials anywhere in the chain (see `aws_chain`).
    "NoCredentials",
];

/// Classifies object_store's error (see the module docs).
pub fn classify(error: &object_store::Error) -> FailureClass {
    if matches!(
        error,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    ) {
        return FailureClass::Collision;
    }
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(" / ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if NO_BUCKET.iter().any(|code| text.contains(code)) {
        FailureClass::NoBucket
    } else if DENIED.iter().any(|code| text.contains(code)) {
        FailureClass::Denied
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
