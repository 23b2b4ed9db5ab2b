//! TLS for the SCIM listener (rustls with the ring provider, the one the rest of the daemon
//! uses): the certificate and key are read from PEM files at start and again on SIGHUP, and
//! each new handshake gets whichever pair is current, so a renewed certificate is served
//! without dropping a connection. A reload that fails keeps the previous pair.
//!
//! Owns: reading the PEM files and the server-side TLS configuration. Must not touch:
//! routing, the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The current certificate and key, swapped whole on reload.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// Read the pair; errors name the key and the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertStore, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = Arc::new(read_pair(&provider, cert_file, key_file)?);
        Ok(CertStore {
            provider,
            current: RwLock::new(Current { key, cert_file: cert_file.into(), key_file: key_file.into() }),
        })
    }

    /// Read the files again (possibly new paths); on success new handshakes use the new
    /// pair. Returns a short description of the certificate now served.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<String, String> {
        let key = Arc::new(read_pair(&self.provider, cert_file, key_file)?);
        let what = describe(&key);
        let mut cur = self.current.write().map_err(|_| "certificate store poisoned".to_string())?;
        *cur = Current { key, cert_file: cert_file.into(), key_file: key_file.into() };
        Ok(what)
    }

    /// The paths the current pair was read from.
    pub fn paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.current.read().ok().map(|c| (c.cert_file.clone(), c.key_file.clone()))
    }

    /// A description of the certificate being served (for the start and reload log lines).
    pub fn describe(&self) -> String {
        self.current.read().map(|c| describe(&c.key)).unwrap_or_default()
    }

    /// The rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN) resolving through this store.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn read_pair(provider: &CryptoProvider, cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert_file)
        .map_err(|e| format!("server.tls.cert_file: cannot read {}: {e}", cert_file.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.cert_file: {} is not PEM: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert_file: no CERTIFICATE block in {}", cert_file.display()));
    }
    let key_pem =
        std::fs::read(key_file).map_err(|e| format!("server.tls.key_file: cannot read {}: {e}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("server.tls.key_file: no private key in {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "server.tls.key_file: {} does not fit the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// Size and a short fingerprint of the leaf, enough to tell two certificates apart in a log.
fn describe(key: &CertifiedKey) -> String {
    use sha2::Digest;
    let leaf = key.cert.first().map(|c| c.as_ref()).unwrap_or_default();
    let digest = sha2::Sha256::digest(leaf);
    format!("sha256:{} ({} certificate(s) in the chain)", hex::encode(&digest[..8]), key.cert.len())
}
