//! The TLS client configuration handed to rumqttc: rustls on the `ring` provider (rumqttc is
//! built with `use-rustls-no-provider`, so no process-wide provider and no aws-lc exist).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::client::{MqttError, MqttSettings};

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> MqttError {
    MqttError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads the CA and client certificate files once, at start, so a wrong path is reported
/// before the daemon runs rather than on every reconnect.
pub(crate) fn tls_setup(s: &MqttSettings) -> Result<Option<Arc<ClientConfig>>, MqttError> {
    if !s.tls {
        if s.ca_file.is_some() || s.client_cert.is_some() || s.client_key.is_some() {
            return Err(MqttError::TlsOptionsWithoutTls);
        }
        return Ok(None);
    }
    // Without a platform-verifier crate there are no system roots; a CA file is the only
    // trust anchor we can offer, and silently trusting everything is not an option.
    let ca = s.ca_file.as_deref().ok_or(MqttError::NoCaFile)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem_error(ca, e))? {
        let cert = cert.map_err(|e| pem_error(ca, e))?;
        roots.add(cert).map_err(MqttError::Tls)?;
    }
    if roots.is_empty() {
        return Err(MqttError::Pem {
            path: ca.to_path_buf(),
            reason: "no CERTIFICATE section".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(MqttError::Tls)?
        .with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| pem_error(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(MqttError::Tls)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(MqttError::ClientCertWithoutKey),
    };
    // rumqttc checks the broker's certificate against the host it connects to; a host that
    // can never be a TLS server name is better refused now than on every reconnect.
    ServerName::try_from(s.host.as_str()).map_err(|_| MqttError::BadServerName(s.host.clone()))?;
    Ok(Some(Arc::new(config)))
}
