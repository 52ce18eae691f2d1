//! TLS for the HTTP clients built here and beside this crate (the object
//! stores' clients, the Iceberg catalog's signing proxy): rustls, with ring
//! for its cryptography, as the AWS SDK's own clients use.
//!
//! reqwest is built without a default provider (the one it would pick,
//! aws-lc-rs, is a second C library to build), so ring is installed as the
//! process's provider before the first client is built. A provider that
//! something else installed first is kept.

use std::sync::Once;

/// Makes ring the process's rustls provider unless one is installed;
/// call before building a reqwest client. Cheap after the first call.
pub fn install_tls_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already installed: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reqwest_client_builds_once_the_provider_is_installed() {
        install_tls_provider();
        install_tls_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        reqwest::Client::builder()
            .build()
            .expect("a client with the system's roots");
    }
}
