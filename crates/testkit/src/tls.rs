//! A TLS-terminating relay in front of a real server, with a certificate made for the test.
//!
//! The machine's Redis, PostgreSQL and MariaDB are shared and may not be reconfigured or
//! restarted, so a test that needs TLS to one of them puts a [`TlsLink`] in front: clients
//! speak TLS to the link (trusting [`TlsLink::ca`]), the link speaks plain TCP to the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A TLS relay to a plain server; stops when dropped.
#[derive(Debug)]
pub struct TlsLink {
    addr: SocketAddr,
    ca: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl TlsLink {
    /// Makes a certificate for `127.0.0.1` and `localhost` in `dir` (with `openssl`) and
    /// starts relaying from an ephemeral port to `target`.
    pub async fn start(target: SocketAddr, dir: &Path) -> Result<Self, String> {
        let (cert, key) = self_signed(dir)?;
        let certs = CertificateDer::pem_file_iter(&cert)
            .and_then(|c| c.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        let key =
            PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| e.to_string())?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(Self {
            addr,
            ca: cert,
            task,
        })
    }

    /// Where clients connect (TLS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM certificate clients must trust (self-signed, so it is its own authority).
    pub fn ca(&self) -> &Path {
        &self.ca
    }
}

impl Drop for TlsLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed certificate and its key for `localhost` and `127.0.0.1`, as PEM files in
/// `dir`.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    self_signed_for(dir, "localhost", &["DNS:localhost", "IP:127.0.0.1"])
}

/// A self-signed certificate for `names` (`DNS:x`, `IP:y`) as `<stem>.pem` and its key as
/// `<stem>-key.pem` in `dir`, the certificate being its own trust root.
pub fn self_signed_for(
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = if stem == "localhost" {
        (dir.join("cert.pem"), dir.join("key.pem"))
    } else {
        (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}-key.pem")),
        )
    };
    let san = format!("subjectAltName={}", names.join(","));
    let subject = format!("/CN={stem}");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            &subject,
            "-addext",
            &san,
            // rustls refuses a CA certificate as a server's own, which `req -x509` makes by
            // default.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "1",
        ])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "openssl: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    Ok((cert, key))
}
