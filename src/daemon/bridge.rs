//! The TCP bridge of a wired bus: a transparent byte pipe between one TCP client (a
//! commissioning tool such as MBSheet or `meterbridge read --tcp`) and the bus. While a client
//! is connected the gateway's polling of that bus pauses — M-Bus has room for one master — and
//! it resumes when the client leaves or stays idle too long.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::schema::{BusEndpoint, TcpBridgeConfig};
use crate::receivers::input::Backoff;
use crate::transport::open::{open_serial, open_tcp};

/// How long the bridge waits for a polling cycle in progress to let go of the bus.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Serves the bridge for as long as the gateway runs. `pause` tells the bus task to stop polling and
/// let go of the port; `released` says it has.
pub async fn run_bridge(
    bus_name: String,
    endpoint: BusEndpoint,
    config: TcpBridgeConfig,
    pause: watch::Sender<bool>,
    mut released: watch::Receiver<bool>,
) {
    let address = format!("{}:{}", config.bind, config.port);
    // A port that is taken (another program, a previous instance still shutting down) may free
    // up: retried with backoff, reported once when it fails and once when it works. Polling
    // goes on meanwhile; `pause` stays alive and false, so the bus task never stops.
    let mut backoff = Backoff::new();
    let mut failed = false;
    let listener = loop {
        match TcpListener::bind(&address).await {
            Ok(l) => break l,
            Err(e) => {
                if !std::mem::replace(&mut failed, true) {
                    warn!(
                        bus = %bus_name,
                        "bus {bus_name}: cannot open the TCP bridge on {address}: {e}; \
                         polling goes on, the bridge is retried until the port is free"
                    );
                }
                backoff.wait().await;
            }
        }
    };
    if failed {
        info!(
            bus = %bus_name,
            "bus {bus_name}: TCP bridge on {address} (the port is free again)"
        );
    } else {
        info!(bus = %bus_name, "bus {bus_name}: TCP bridge on {address}");
    }
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        info!(
            bus = %bus_name,
            "bus {bus_name}: bridge client {peer} connected; polling paused"
        );
        pause.send_replace(true);
        let ready = tokio::time::timeout(RELEASE_WAIT, released.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        if !ready {
            warn!(
                bus = %bus_name,
                "bus {bus_name}: the bus was not released in time; bridge client {peer} refused"
            );
            drop(client);
            pause.send_replace(false);
            continue;
        }
        let reason = serve_client(client, &endpoint, &config, &listener).await;
        info!(
            bus = %bus_name,
            "bus {bus_name}: bridge client {peer} left ({reason}); polling resumes"
        );
        pause.send_replace(false);
    }
}

/// Pipes bytes between the client and the bus until one side closes or nothing moves for the
/// idle timeout. Further clients are turned away meanwhile: one master at a time.
async fn serve_client(
    mut client: TcpStream,
    endpoint: &BusEndpoint,
    config: &TcpBridgeConfig,
    listener: &TcpListener,
) -> String {
    let mut bus = match endpoint {
        BusEndpoint::Serial { device, baud } => match open_serial(device, *baud) {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        },
        BusEndpoint::Tcp { address } => match open_tcp(address, Duration::from_secs(10)).await {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        },
    };
    let mut from_client = [0u8; 512];
    let mut from_bus = [0u8; 512];
    loop {
        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::select! {
            n = client.read(&mut from_client) => match n {
                Ok(0) | Err(_) => return "client closed".into(),
                Ok(n) => {
                    if bus.write_all(&from_client[..n]).await.is_err() {
                        return "the bus connection failed".into();
                    }
                }
            },
            n = bus.read(&mut from_bus) => match n {
                Ok(0) | Err(_) => return "the bus connection closed".into(),
                Ok(n) => {
                    if client.write_all(&from_bus[..n]).await.is_err() {
                        return "client closed".into();
                    }
                }
            },
            other = listener.accept() => {
                if let Ok((mut second, _)) = other {
                    let _ = second.shutdown().await;
                }
            }
            _ = idle => return "idle timeout".into(),
        }
    }
}
