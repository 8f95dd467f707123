//! The byte stream to the broker: plain TCP or TLS through rustls (ring provider).
//!
//! rustls is sans-I/O; this drives a `ClientConnection` over a tokio `TcpStream` directly
//! (no tokio-rustls in the dependency tree). Reads are cancel-safe: the only await inside
//! [`Transport::read`] is a socket read whose bytes are stored in `self` before anything else
//! happens, so the connection loop can use it in `select!`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{MqttError, MqttSettings};

/// A verified TLS client configuration and the name the broker's certificate must carry.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> MqttError {
    MqttError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads the CA and client certificate files once, at start, so a wrong path is reported
/// before the daemon runs rather than on every reconnect.
pub(crate) fn tls_setup(s: &MqttSettings) -> Result<Option<TlsSetup>, MqttError> {
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
    let server_name = ServerName::try_from(s.host.clone())
        .map_err(|_| MqttError::BadServerName(s.host.clone()))?;
    Ok(Some(TlsSetup {
        config: Arc::new(config),
        server_name,
    }))
}

pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    cipher: Vec<u8>,
    scratch: Box<[u8; 16 * 1024]>,
}

fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    async fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut records = Vec::new();
            self.conn.write_tls(&mut records)?;
            self.tcp.write_all(&records).await?;
        }
        Ok(())
    }

    /// Hands ciphertext to rustls; true when rustls took some.
    fn feed(&mut self) -> io::Result<bool> {
        if self.cipher.is_empty() {
            return Ok(false);
        }
        let mut rest = &self.cipher[..];
        let taken = self.conn.read_tls(&mut rest)?;
        self.cipher.drain(..taken);
        self.conn.process_new_packets().map_err(tls_io)?;
        Ok(taken > 0)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let n = self.tcp.read(&mut self.scratch[..]).await?;
        if let Some(bytes) = self.scratch.get(..n) {
            self.cipher.extend_from_slice(bytes);
        }
        Ok(n)
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush_records().await?;
            if !self.conn.is_handshaking() {
                break;
            }
            if !self.feed()? && self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        self.flush_records().await
    }
}

impl Transport {
    pub(crate) async fn connect(host: &str, port: u16, tls: Option<&TlsSetup>) -> io::Result<Self> {
        let tcp = TcpStream::connect((host, port)).await?;
        // Small MQTT packets (acks, pings) must not wait for Nagle.
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(Transport::Plain(tcp));
        };
        let conn =
            ClientConnection::new(tls.config.clone(), tls.server_name.clone()).map_err(tls_io)?;
        let mut stream = Box::new(TlsStream {
            tcp,
            conn,
            cipher: Vec::new(),
            scratch: Box::new([0; 16 * 1024]),
        });
        stream.handshake().await?;
        Ok(Transport::Tls(stream))
    }

    /// Plaintext into `out`; 0 means the broker closed the connection. Cancel-safe.
    pub(crate) async fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(out).await,
            Transport::Tls(s) => loop {
                match s.conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if s.feed()? {
                    continue;
                }
                if s.fill().await? == 0 {
                    return Ok(0);
                }
            },
        }
    }

    /// Sends records rustls produced while reading (alerts, key updates).
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(s) => s.flush_records().await,
        }
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.write_all(data).await,
            Transport::Tls(s) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = s.conn.writer().write(rest)?;
                    rest = rest.get(n..).unwrap_or_default();
                    s.flush_records().await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn close(&mut self) {
        match self {
            Transport::Plain(tcp) => {
                let _ = tcp.shutdown().await;
            }
            Transport::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush_records().await;
                let _ = s.tcp.shutdown().await;
            }
        }
    }
}
