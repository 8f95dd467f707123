//! The wired buses on the web page: primary and secondary scans with live progress and cancel,
//! "read now" on a meter, setting a primary address (only with `allow_bus_writes`), and adding
//! a meter a scan found. The gateway task carries the commands out through each bus's own task,
//! which owns the bus: a scan takes its turn between polling rounds, never beside one.
//!
//! The page's script for this part is `assets/wired.js`; it follows its own view
//! ([`WiredView`], a JSON document the gateway rebuilds at most four times a second while
//! something changes) over its own event stream, `wired-events`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

use super::{asset, field, json, parse_body, Command, Shared};

const WIRED_JS: &str = include_str!("assets/wired.js");

/// What the gateway last published about its buses.
#[derive(Debug, Clone, Default)]
pub struct WiredView {
    pub json: Arc<str>,
}

/// The answer to a wired command: a JSON object merged into `{"ok": true, …}`, or an error
/// the page shows as it is.
pub type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

/// A meter's address on a bus as the page gives it: a primary number or a 16-digit secondary
/// address (8 digits name the identification number only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WiredAddress {
    Primary(u8),
    Secondary(String),
}

#[derive(Debug)]
pub enum WiredCommand {
    Scan {
        bus: String,
        secondary: bool,
        reply: Reply,
    },
    Cancel {
        bus: String,
        reply: Reply,
    },
    /// Read a configured wired meter now (by name); answers with its fields and records.
    Read {
        meter: String,
        reply: Reply,
    },
    SetAddress {
        bus: String,
        address: WiredAddress,
        new_address: u8,
        reply: Reply,
    },
    /// Never sent by the page: the gateway tells itself that the meter `meter` (added on the
    /// page, configured at primary address `old`) took primary address `new`, so that its
    /// saved entry follows; `message` is the answer to give once that is done.
    AddressTaken {
        meter: usize,
        old: u8,
        new: u8,
        message: String,
        reply: Reply,
    },
    /// Add a meter found on a bus: polled from now on, saved for restarts.
    Add {
        bus: String,
        address: WiredAddress,
        name: String,
        driver: String,
        reply: Reply,
    },
}

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/wired.js",
            get(|| async { asset(WIRED_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/api/wired", get(wired_view))
        .route("/wired-events", get(wired_events))
        .route("/api/wired/scan", post(scan))
        .route("/api/wired/cancel", post(cancel))
        .route("/api/wired/read", post(read))
        .route("/api/wired/address", post(set_address))
        .route("/api/wired/meters", post(add))
}

async fn wired_view(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.wired.borrow().clone();
    json(StatusCode::OK, view.json.to_string())
}

/// The wired view as server-sent events (`event: wired`): the current one, then each change.
async fn wired_events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut rx = shared.wired.clone();
    rx.mark_changed();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let json = rx.borrow_and_update().json.clone();
        Some((Ok(Event::default().event("wired").data(&*json)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn refused(status: StatusCode, error: &str) -> Response {
    json(
        status,
        serde_json::json!({"ok": false, "error": error}).to_string(),
    )
}

/// Hands the command to the gateway and waits for its answer (a read of a meter with many
/// telegrams at 300 baud takes a while, hence the long wait).
async fn ask(
    shared: &Shared,
    command: WiredCommand,
    answer: oneshot::Receiver<Result<serde_json::Value, String>>,
) -> Response {
    if shared.commands.try_send(Command::Wired(command)).is_err() {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is busy; try again",
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(Ok(value))) => {
            let mut body = serde_json::Map::new();
            body.insert("ok".into(), true.into());
            if let serde_json::Value::Object(fields) = value {
                body.extend(fields);
            }
            json(StatusCode::OK, serde_json::Value::Object(body).to_string())
        }
        Ok(Ok(Err(error))) => refused(StatusCode::UNPROCESSABLE_ENTITY, &error),
        _ => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway did not answer",
        ),
    }
}

/// The `address` of a body: a number is a primary address, text a secondary one.
pub(crate) fn address_of(body: &serde_json::Value, key: &str) -> Result<WiredAddress, String> {
    match body.get(key) {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|a| u8::try_from(a).ok())
            .filter(|a| *a <= 250)
            .map(WiredAddress::Primary)
            .ok_or_else(|| format!("{key}: a primary address is 0 to 250")),
        Some(serde_json::Value::String(s)) => {
            let s = s.trim().to_ascii_uppercase();
            let ok = (s.len() == 8 || s.len() == 16) && s.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                Ok(WiredAddress::Secondary(s))
            } else {
                Err(format!(
                    "{key}: a secondary address is 16 hex digits (or 8 for the id)"
                ))
            }
        }
        _ => Err(format!(
            "give {key}: a primary address (number) or a secondary address (text)"
        )),
    }
}

async fn scan(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(bus) = field(&body, "bus") else {
        return refused(StatusCode::BAD_REQUEST, "give bus");
    };
    let secondary = match field(&body, "type").as_deref() {
        Some("primary") | None => false,
        Some("secondary") => true,
        Some(_) => return refused(StatusCode::BAD_REQUEST, "type is primary or secondary"),
    };
    let (reply, answer) = oneshot::channel();
    ask(
        &shared,
        WiredCommand::Scan {
            bus,
            secondary,
            reply,
        },
        answer,
    )
    .await
}

async fn cancel(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(bus) = field(&body, "bus") else {
        return refused(StatusCode::BAD_REQUEST, "give bus");
    };
    let (reply, answer) = oneshot::channel();
    ask(&shared, WiredCommand::Cancel { bus, reply }, answer).await
}

async fn read(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(meter) = field(&body, "meter") else {
        return refused(StatusCode::BAD_REQUEST, "give meter (its name)");
    };
    let (reply, answer) = oneshot::channel();
    ask(&shared, WiredCommand::Read { meter, reply }, answer).await
}

async fn set_address(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(bus) = field(&body, "bus") else {
        return refused(StatusCode::BAD_REQUEST, "give bus");
    };
    let address = match address_of(&body, "address") {
        Ok(a) => a,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e),
    };
    let Ok(WiredAddress::Primary(new_address)) = address_of(&body, "new_address") else {
        return refused(
            StatusCode::BAD_REQUEST,
            "give new_address: a primary address, 0 to 250",
        );
    };
    let (reply, answer) = oneshot::channel();
    ask(
        &shared,
        WiredCommand::SetAddress {
            bus,
            address,
            new_address,
            reply,
        },
        answer,
    )
    .await
}

async fn add(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (Some(bus), Some(name)) = (field(&body, "bus"), field(&body, "name")) else {
        return refused(StatusCode::BAD_REQUEST, "give bus and name");
    };
    let address = match address_of(&body, "address") {
        Ok(a) => a,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e),
    };
    let driver = field(&body, "driver")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "auto".into());
    let (reply, answer) = oneshot::channel();
    ask(
        &shared,
        WiredCommand::Add {
            bus,
            address,
            name,
            driver,
            reply,
        },
        answer,
    )
    .await
}
