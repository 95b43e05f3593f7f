//! Loading the leader's HTTPS certificate (PEM) into a rustls server configuration (ring provider: one TLS
//! stack, no OpenSSL).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::Error;

/// Reads the certificate chain and key; every failure names the file and what to fix.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|err| {
            Error::Tls(format!(
                "{}: cannot read the certificate chain: {err}; give a PEM file with the certificate first",
                files.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate found; give a PEM file with \"BEGIN CERTIFICATE\" blocks",
            files.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|err| {
        Error::Tls(format!(
            "{}: cannot read the private key: {err}; give a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key_file.display()
        ))
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Tls(err.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| {
                Error::Tls(format!(
                    "{} and {} do not form a usable certificate: {err}",
                    files.cert_file.display(),
                    files.key_file.display()
                ))
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
