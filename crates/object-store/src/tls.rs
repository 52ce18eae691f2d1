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
    use std::io::{BufRead as _, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// `tests/tls_server.py`: HTTPS on loopback with a certificate from a CA
    /// of its own, killed on drop.
    struct Server {
        child: Child,
        port: u16,
        ca_pem: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start_server() -> Server {
        let python = std::env::var_os("DYNAMO_CDC_PYTHON").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
            PathBuf::from,
        );
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_server.py"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): set DYNAMO_CDC_PYTHON to a Python with \
                     cryptography, or run scripts/test.sh, which makes .venv",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
        Server {
            child,
            port,
            ca_pem,
            _dir: dir,
        }
    }

    fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // reqwest's `Debug` shows the whole source chain, down to rustls'
        // verdict on the certificate.
        runtime.block_on(async {
            let answer = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
            answer.text().await.map_err(|e| format!("{e:?}"))
        })
    }

    #[test]
    fn a_reqwest_client_builds_once_the_provider_is_installed() {
        install_tls_provider();
        install_tls_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        reqwest::Client::builder()
            .build()
            .expect("a client with the system's roots");
    }

    /// Clients built as object_store builds them (the system's roots, plus
    /// any root certificate configured) verify the server: a certificate
    /// from an unknown CA is refused, the same server is reached once its CA
    /// is trusted.
    #[test]
    #[ignore = "needs Python with cryptography: DYNAMO_CDC_PYTHON, else .venv/bin/python (scripts/test.sh runs it)"]
    fn https_servers_are_verified_against_the_trusted_roots() {
        let server = start_server();
        let url = format!("https://127.0.0.1:{}/", server.port);
        install_tls_provider();

        let system_roots = reqwest::Client::builder().no_proxy().build().unwrap();
        let refused = get(&system_roots, &url).expect_err("an unknown CA is refused");
        assert!(
            refused.contains("certificate") || refused.contains("UnknownIssuer"),
            "{refused}"
        );

        let ca = reqwest::Certificate::from_pem(&server.ca_pem).unwrap();
        let trusting = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_merge([ca])
            .build()
            .unwrap();
        assert_eq!(get(&trusting, &url).as_deref(), Ok("over tls"));
    }
}
