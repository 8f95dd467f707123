//! Opening the byte stream to a segment: a serial level converter (8E1 at an M-Bus baud rate,
//! opened exclusively) or an M-Bus/TCP gateway. Errors say what to do.

use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, StopBits};

use super::timing::BAUD_RATES;
use super::{Port, PortConfig, Stream};

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("{baud} baud is not an M-Bus rate; use one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400")]
    Baud { baud: u32 },
    #[error("serial device {path} does not exist; check the path (ls /dev/serial/by-id/ lists USB converters by a name that stays stable)")]
    NotFound { path: String },
    #[error("no permission to open {path}; add your user to the group that owns it (usually `dialout`: sudo usermod -aG dialout $USER, then log in again)")]
    Permission { path: String },
    #[error("serial device {path} is in use by another program (it is opened exclusively)")]
    Busy { path: String },
    #[error("cannot open serial device {path}: {message}")]
    Serial { path: String, message: String },
    #[error("cannot connect to the M-Bus/TCP gateway {address}: {source}")]
    Tcp {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to {address} took longer than {seconds} s; check the address and that the gateway is powered")]
    TcpTimeout { address: String, seconds: u64 },
    #[error("the connection dropped and this port cannot be reopened (only TCP gateways are reconnected)")]
    NotReconnectable,
}

/// Where a segment is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Serial(String),
    Tcp(String),
}

/// Opens a serial converter at `baud`, 8 data bits, even parity, 1 stop bit, exclusively.
pub fn open_serial(path: &str, baud: u32) -> Result<Box<dyn Stream>, OpenError> {
    if !BAUD_RATES.contains(&baud) {
        return Err(OpenError::Baud { baud });
    }
    let builder = tokio_serial::new(path, baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::Even)
        .stop_bits(StopBits::One)
        .timeout(Duration::from_millis(10));
    let mut stream = builder.open_native_async().map_err(|e| {
        let path = path.to_string();
        match e.kind {
            tokio_serial::ErrorKind::NoDevice => OpenError::NotFound { path },
            tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => {
                OpenError::NotFound { path }
            }
            tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                OpenError::Permission { path }
            }
            _ if e.description.contains("busy") || e.description.contains("Resource busy") => {
                OpenError::Busy { path }
            }
            _ => OpenError::Serial {
                path,
                message: e.description,
            },
        }
    })?;
    // Two programs talking on one half-duplex segment would corrupt each other's exchanges.
    let _ = stream.set_exclusive(true);
    Ok(Box::new(stream))
}

/// Connects to an M-Bus/TCP gateway (`host:port`).
pub async fn open_tcp(
    address: &str,
    connect_timeout: Duration,
) -> Result<Box<dyn Stream>, OpenError> {
    match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
        Err(_) => Err(OpenError::TcpTimeout {
            address: address.to_string(),
            seconds: connect_timeout.as_secs(),
        }),
        Ok(Err(source)) => Err(OpenError::Tcp {
            address: address.to_string(),
            source,
        }),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
    }
}

/// The latency allowance to use when the user gives none: USB serial adapters deliver bytes
/// in bursts, TCP gateways buffer and forward in packets.
pub fn default_latency(endpoint: &Endpoint) -> Duration {
    match endpoint {
        Endpoint::Serial(_) => Duration::from_millis(50),
        Endpoint::Tcp(_) => Duration::from_millis(100),
    }
}

/// Opens a port on an endpoint with exactly the given settings.
pub async fn open_port(endpoint: &Endpoint, config: PortConfig) -> Result<Port, OpenError> {
    Ok(match endpoint {
        Endpoint::Serial(path) => Port::new(open_serial(path, config.baud)?, config),
        Endpoint::Tcp(address) => Port::reconnecting(
            open_tcp(address, Duration::from_secs(10)).await?,
            config,
            address.clone(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_and_bad_baud_explain_themselves() {
        let e = open_serial("/dev/does-not-exist-meterbridge", 2400)
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("/dev/does-not-exist-meterbridge"), "{e}");
        assert!(
            e.contains("does not exist") || e.contains("cannot open"),
            "{e}"
        );
        let e = open_serial("/dev/null", 2401)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("2401 baud is not an M-Bus rate"), "{e}");
    }

    #[tokio::test]
    async fn refused_tcp_names_the_address() {
        // Port 1 on localhost is closed on any test machine.
        let e = open_tcp("127.0.0.1:1", Duration::from_secs(2))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("127.0.0.1:1"), "{e}");
    }
}
