//! TLS termination from PEM files: one acceptor builder for every listener that speaks
//! TLS (the proxy's listeners, the MQTT broker's), so certificate errors read the same
//! everywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// `tls = { cert = "...", key = "...", sni = [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain: for clients that name no server, or one no `sni` entry has.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// More certificates, each served to clients that ask for one of its names (SNI): one
    /// listener for several sites, like HAProxy's `crt-list` or nginx's `server_name`.
    #[serde(default)]
    pub sni: Vec<SniCertificate>,
}

/// One entry of `sni = [{ names = [...], cert = "...", key = "..." }]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Server names it is for: `shop.example.com`, or `*.example.com` for one label below.
    pub names: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Builds an acceptor offering `alpn` (most preferred first; empty for none); the error
/// says which file is wrong and why.
pub fn acceptor(cfg: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified(&cfg.cert, &cfg.key, &provider)?;
    let mut named = Vec::new();
    for entry in &cfg.sni {
        let key = certified(&entry.cert, &entry.key, &provider)?;
        for name in &entry.names {
            named.push((name.to_ascii_lowercase(), key.clone()));
        }
    }
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { default, named }));
    sc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(sc)))
}

/// A certificate chain and its key, checked to belong together.
fn certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    CertifiedKey::from_der(certs, der, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not form a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })
}

/// Chooses the certificate by the server name the client asked for: an exact name first,
/// then `*.` one label up, then the default.
#[derive(Debug)]
struct BySni {
    default: Arc<CertifiedKey>,
    /// (lowercase name or `*.domain`, certificate).
    named: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        let wildcard = name.split_once('.').map(|(_, up)| format!("*.{up}"));
        let find = |wanted: &str| {
            self.named
                .iter()
                .find(|(n, _)| n == wanted)
                .map(|(_, k)| k.clone())
        };
        find(&name)
            .or_else(|| wildcard.as_deref().and_then(find))
            .or_else(|| Some(self.default.clone()))
    }
}
