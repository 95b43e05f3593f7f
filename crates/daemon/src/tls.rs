//! The TLS client settings both daemons use for their outgoing requests (follower → leader, leader → follower):
//! rustls with the ring provider, the system's roots plus an optional private CA.
// Blocking: certificates and keys are read once at start-up, before the runtime serves.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client configuration trusting the system roots and, when given, the PEM certificates of `extra_ca`.
pub fn client_tls(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    client_tls_with_identity(extra_ca, None)
}

/// [`client_tls`], presenting the PEM certificate chain and key of `identity` when the server asks for one
/// (etcd members that require client certificates).
pub fn client_tls_with_identity(
    extra_ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(ca_file) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|err| format!("{}: cannot read CA certificates: {err}", ca_file.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate found", ca_file.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| format!("{}: unusable CA certificate: {err}", ca_file.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| err.to_string())?
    .with_root_certificates(roots);
    let Some((cert_file, key_file)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|err| {
            format!(
                "{}: cannot read the certificate: {err}",
                cert_file.display()
            )
        })?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_file)
        .map_err(|err| format!("{}: cannot read the key: {err}", key_file.display()))?;
    builder.with_client_auth_cert(chain, key).map_err(|err| {
        format!(
            "{}: unusable client certificate: {err}",
            cert_file.display()
        )
    })
}

/// An error followed by its causes (`a: b: c`): the root cause says "connection refused", "certificate unknown".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_ca_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(
            client_tls(Some(&empty))
                .unwrap_err()
                .contains("no certificate")
        );
        assert!(client_tls(Some(&dir.path().join("none.pem"))).is_err());
        assert!(client_tls(None).is_ok());
    }
}
