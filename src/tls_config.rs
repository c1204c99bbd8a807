//! TLS configurations, built from PEM with rustls (crypto provider `ring`): what a server
//! presents and whom it asks for a certificate, what a client trusts and presents. Settings
//! ([`TlsSettings`]) are gathered first, then built once into an immutable [`TlsConfig`] that
//! connections share.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Result};

/// A certificate chain and its private key.
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

#[derive(Clone)]
enum Role {
    Server(Identity),
    Client(Arc<RootCertStore>),
}

/// The settings of a TLS configuration, before it is built: a server's certificate and key,
/// or a client's trusted roots, with ALPN protocols and mutual TLS.
#[derive(Clone)]
pub struct TlsSettings {
    role: Role,
    alpn: Vec<Vec<u8>>,
    /// Server: the roots a client's certificate must chain to (required when set).
    client_ca: Option<Arc<RootCertStore>>,
    /// Client: the certificate presented when the server asks for one.
    client_cert: Option<Identity>,
}

/// A built TLS configuration: cheap to clone, shared by every connection made with it.
#[derive(Clone)]
pub struct TlsConfig(pub(crate) Side);

#[derive(Clone)]
pub(crate) enum Side {
    Server(Arc<ServerConfig>),
    /// With the name a client verifies the server against (set per client from its address).
    Client(Arc<ClientConfig>, Option<ServerName<'static>>),
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Side::Server(_) => f.write_str("TlsConfig::Server"),
            Side::Client(_, name) => write!(f, "TlsConfig::Client({name:?})"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Tls(e.to_string().into())
}

/// Reads a whole PEM file (for the error, named as `what`).
pub fn read_pem_file(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read the {what} file {path:?}: {e}").into()))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("bad PEM in the {what}: {e}").into()))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("no certificate in the {what}").into()));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::Tls(format!("no usable private key in the key PEM: {e}").into()))
}

fn roots(pem: &[u8], what: &str) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem, what)? {
        store
            .add(cert)
            .map_err(|e| Error::Tls(format!("a certificate of the {what} is not a usable root: {e}").into()))?;
    }
    Ok(Arc::new(store))
}

/// The system's trusted roots (the OpenSSL locations, /etc/ssl/certs on Debian, or
/// SSL_CERT_FILE / SSL_CERT_DIR).
fn system_roots() -> Result<Arc<RootCertStore>> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Tls("no trusted root certificates found on this system".into()));
    }
    Ok(Arc::new(store))
}

fn identity(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity> {
    Ok(Identity {
        certs: certs(cert_pem, "certificate PEM")?,
        key: key(key_pem)?,
    })
}

impl TlsSettings {
    /// A server presenting the certificate chain `cert_pem` (leaf first) with its private key
    /// `key_pem` (PKCS#8, PKCS#1 or SEC1). Checked at once: a key that does not match the
    /// certificate is refused here.
    pub fn server(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsSettings> {
        let settings = TlsSettings {
            role: Role::Server(identity(cert_pem, key_pem)?),
            alpn: Vec::new(),
            client_ca: None,
            client_cert: None,
        };
        settings.build()?;
        Ok(settings)
    }

    /// A client trusting the roots in `ca_pem`, or with `None` the system's.
    pub fn client(ca_pem: Option<&[u8]>) -> Result<TlsSettings> {
        let roots = match ca_pem {
            Some(pem) => roots(pem, "CA PEM")?,
            None => system_roots()?,
        };
        Ok(TlsSettings {
            role: Role::Client(roots),
            alpn: Vec::new(),
            client_ca: None,
            client_cert: None,
        })
    }

    /// The ALPN protocols offered (client) or accepted (server), in order of preference, as
    /// comma-separated text: "h2,http/1.1". "" offers none.
    pub fn set_alpn(&mut self, protocols: &str) -> Result<()> {
        let list: Vec<Vec<u8>> = protocols
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .collect();
        if let Some(p) = list.iter().find(|p| p.len() > 255) {
            return Err(Error::Invalid(
                format!("an ALPN protocol of {} bytes (at most 255)", p.len()).into(),
            ));
        }
        self.alpn = list;
        Ok(())
    }

    /// Server only: clients must present a certificate that chains to a root in `ca_pem`.
    pub fn set_client_ca(&mut self, ca_pem: &[u8]) -> Result<()> {
        if !matches!(self.role, Role::Server(_)) {
            return Err(Error::Invalid("a client CA is a server's setting".into()));
        }
        self.client_ca = Some(roots(ca_pem, "client CA PEM")?);
        self.build().map(|_| ())
    }

    /// Client only: the certificate and key presented to a server that asks for one.
    pub fn set_client_cert(&mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        if !matches!(self.role, Role::Client(_)) {
            return Err(Error::Invalid("a client certificate is a client's setting".into()));
        }
        let before = self.client_cert.replace(identity(cert_pem, key_pem)?);
        if let Err(e) = self.build() {
            self.client_cert = before;
            return Err(e);
        }
        Ok(())
    }

    /// The configuration connections use: TLS 1.2 and 1.3 with rustls's safe defaults.
    pub fn build(&self) -> Result<TlsConfig> {
        let provider = provider();
        let side = match &self.role {
            Role::Server(id) => {
                let builder = ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(tls_error)?;
                let builder = match &self.client_ca {
                    Some(roots) => {
                        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                            .build()
                            .map_err(|e| Error::Tls(format!("client CA: {e}").into()))?;
                        builder.with_client_cert_verifier(verifier)
                    }
                    None => builder.with_no_client_auth(),
                };
                let mut config =
                    builder
                        .with_single_cert(id.certs.clone(), id.key.clone_key())
                        .map_err(|e| match e {
                            rustls::Error::InconsistentKeys(_) => Error::Tls("key does not match certificate".into()),
                            e => tls_error(e),
                        })?;
                config.alpn_protocols = self.alpn.clone();
                Side::Server(Arc::new(config))
            }
            Role::Client(roots) => {
                let builder = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(tls_error)?
                    .with_root_certificates(roots.clone());
                let mut config = match &self.client_cert {
                    Some(id) => builder
                        .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                        .map_err(|e| match e {
                            rustls::Error::InconsistentKeys(_) => Error::Tls("key does not match certificate".into()),
                            e => tls_error(e),
                        })?,
                    None => builder.with_no_client_auth(),
                };
                config.alpn_protocols = self.alpn.clone();
                Side::Client(Arc::new(config), None)
            }
        };
        Ok(TlsConfig(side))
    }
}

impl TlsConfig {
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.0, Side::Server(_))
    }

    /// A client's configuration bound to the host of address text `addr` (its SNI and the
    /// name the certificate must be valid for; an IP address checks the IP SANs). Servers'
    /// are refused (`Invalid`).
    pub fn for_address(&self, addr: &str) -> Result<TlsConfig> {
        let Side::Client(config, _) = &self.0 else {
            return Err(Error::Invalid("a client needs a client TLS configuration".into()));
        };
        let name = ServerName::try_from(host_of(addr)?.to_owned())
            .map_err(|_| Error::Tls(format!("{addr:?} has no host name to verify").into()))?;
        Ok(TlsConfig(Side::Client(config.clone(), Some(name))))
    }
}

/// The host of address text: "example.com:443" -> "example.com", "[::1]:443" -> "::1",
/// ":443" -> "localhost" (this host). A Unix path has none.
fn host_of(addr: &str) -> Result<&str> {
    if addr.starts_with("unix:") {
        return Err(Error::Invalid(
            "TLS over a Unix socket has no host name to verify".into(),
        ));
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    // A scope ("fe80::1%eth0") is not part of the name a certificate carries.
    let host = host.split('%').next().unwrap_or(host);
    Ok(if host.is_empty() { "localhost" } else { host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        for (addr, host) in [
            ("example.com:443", "example.com"),
            ("127.0.0.1:1", "127.0.0.1"),
            ("[::1]:8443", "::1"),
            ("[fe80::1%eth0]:1", "fe80::1"),
            (":6666", "localhost"),
        ] {
            assert_eq!(host_of(addr).unwrap(), host, "{addr}");
        }
        assert!(host_of("unix:/tmp/x").is_err());
    }

    #[test]
    fn bad_pem_is_a_tls_error() {
        let e = TlsSettings::server(b"not pem", b"not pem").err().unwrap();
        assert!(matches!(e, Error::Tls(_)), "{e}");
        let e = TlsSettings::client(Some(b"")).err().unwrap();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }

    #[test]
    fn alpn_lists() {
        let mut s = TlsSettings::client(None).unwrap_or_else(|_| TlsSettings {
            role: Role::Client(Arc::new(RootCertStore::empty())),
            alpn: Vec::new(),
            client_ca: None,
            client_cert: None,
        });
        s.set_alpn("h2,http/1.1").unwrap();
        assert_eq!(s.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(s.set_alpn(&"x".repeat(256)).is_err());
    }
}
