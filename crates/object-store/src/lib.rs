//! Object storage for the dataset and the dead-letter store: `s3://`,
//! `gs://` and `az://` URLs ([`StoreUrl`]), clients built from each cloud's
//! credential chain and the `region` / `endpoint_url` keys
//! ([`StoreOptions`]), a synchronous handle ([`Objects`]) for the
//! synchronous sinks, uploads that become visible only when complete and
//! never replace an existing object ([`Upload`]), what a failure means
//! for the run ([`ObjectError`], [`FailureClass`]), and the TLS provider
//! every HTTP client here is built with ([`install_tls_provider`]).

mod aws_chain;
mod connect;
mod failure;
mod location;
mod objects;
mod tls;
mod upload;
mod url;

pub use connect::StoreOptions;
pub use failure::{FailureClass, ObjectError, classify};
pub use location::Location;
pub use object_store::path::Path as ObjectPath;
pub use object_store::{ObjectMeta, ObjectStore, memory::InMemory};
pub use objects::{Buckets, Objects, block_on_saying};
pub use tls::install_tls_provider;
pub use upload::{CopyError, MAX_FENCED_BYTES, PART_BYTES, STAGING_DIR, Upload};
pub use url::{Scheme, StoreUrl, looks_like_url};
