//! TLS to Redis and Postgres, through rustls with the ring provider: the certificate authorities a
//! `rediss://` server's certificate must chain to (the system's, or those of `redis_ca_file`), the
//! client configuration made of them, and a handshake's failure in words. Postgres connections make
//! their own configuration (sqlx, from the URL's `sslmode` and `sslrootcert`); only their failures
//! are read here.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::Invalid;

/// The certificate authorities a server's certificate must chain to.
#[derive(Clone)]
pub struct Roots(Arc<RootCertStore>);

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Roots").field(&self.0.len()).finish()
    }
}

impl Roots {
    /// Every certificate of the PEM file at `path`, and no other: a private CA replaces the
    /// system's authorities, as libpq's `sslrootcert` does.
    ///
    /// # Errors
    /// [`Invalid`] naming `field` when the file cannot be read, is not PEM, or holds no certificate.
    pub fn from_file(field: &str, path: &Path) -> Result<Self, Invalid> {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| Invalid::new(field, format!("cannot read {shown}: {e}")))?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                Invalid::new(field, format!("{shown} is not a PEM certificate file: {e}"))
            })?;
            store.add(cert).map_err(|e| {
                Invalid::new(
                    field,
                    format!("{shown} holds a certificate rustls refuses: {e}"),
                )
            })?;
        }
        if store.is_empty() {
            return Err(Invalid::new(
                field,
                format!("{shown} holds no certificate (no -----BEGIN CERTIFICATE----- block)"),
            ));
        }
        Ok(Self(Arc::new(store)))
    }

    /// The system's certificate authorities, where OpenSSL finds them (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, else the distribution's bundle). A file among them that cannot be read is
    /// logged and passed over, as libpq and sqlx pass it over.
    ///
    /// # Errors
    /// A message saying so when none is found at all.
    pub fn system() -> Result<Self, String> {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system certificate authority could not be read");
        }
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            return Err(
                "no system certificate authority found (install the ca-certificates \
                        package, or name the server's CA in redis_ca_file)"
                    .into(),
            );
        }
        Ok(Self(Arc::new(store)))
    }

    /// A client configuration that verifies the server's certificate against these authorities and
    /// the host name connected to, and presents no certificate of its own.
    ///
    /// # Errors
    /// rustls' refusal, should the ring provider not support its default protocol versions.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        // ring rather than aws-lc-rs, which rustls now prefers for its post-quantum key exchange:
        // aws-lc-rs builds a large C library (minutes on a small machine, a CMake on some), and
        // sqlx's Postgres connections use ring too (its `tls-rustls-ring` features).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        Ok(ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(self.0.clone())
            .with_no_client_auth())
    }
}

/// A server certificate the TLS handshake refused, in words, read from the debug text of the
/// error (fred keeps a handshake's error only as that text; sqlx's is read the same way): waiting
/// will not mend it. `None` for any other failure. `trust` says where the trusted authorities come
/// from (the setting that names them), for a certificate signed by none of them.
pub fn handshake_refused(debug_text: &str, trust: &str) -> Option<String> {
    let (_, rest) = debug_text.split_once("InvalidCertificate(")?;
    let reason = inside_parens(rest);
    let why = if reason.starts_with("UnknownIssuer") {
        format!("it is signed by no certificate authority rankd trusts ({trust})")
    } else if reason.starts_with("NotValidForName") {
        "it is not valid for the host name rankd connected to".to_owned()
    } else if reason.starts_with("Expired") {
        "it has expired".to_owned()
    } else if reason.starts_with("NotValidYet") {
        "it is not valid yet".to_owned()
    } else {
        "it did not verify".to_owned()
    };
    Some(format!(
        "TLS: the server's certificate was refused: {why} ({reason})"
    ))
}

/// The text of `rest` up to the parenthesis that closes the one opened just before it.
fn inside_parens(rest: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &rest[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_told_in_words_with_its_reason() {
        let m = handshake_refused(
            "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
            "redis_ca_file",
        )
        .unwrap();
        assert_eq!(
            m,
            "TLS: the server's certificate was refused: it is signed by no certificate authority \
             rankd trusts (redis_ca_file) (UnknownIssuer)"
        );
        let m = handshake_refused(
            "Io(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { \
             expected: DnsName(\"db\"), presented: [\"DnsName(\\\"x\\\")\"] }) })",
            "sslrootcert",
        )
        .unwrap();
        assert!(m.contains("not valid for the host name"), "{m}");
        assert!(m.ends_with("presented: [\"DnsName(\\\"x\\\")\"] })"), "{m}");
        assert!(handshake_refused("Os { code: 111, message: \"refused\" }", "x").is_none());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_the_setting() {
        let path = std::env::temp_dir().join(format!("rankd-no-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = Roots::from_file("redis_ca_file", &path).unwrap_err();
        assert_eq!(e.field, "redis_ca_file");
        assert!(e.message.contains("holds no certificate"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = Roots::from_file("redis_ca_file", &path).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }
}
