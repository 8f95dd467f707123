//! The web page: an overview of the meters and receivers, and the meters heard nearby.
//!
//! The gateway task owns all meter state; it publishes a ready-made JSON view over a `watch`
//! channel (at most once a second, only when something changed), which this server hands out
//! as is and streams as server-sent events. Requests that change something go back to the
//! gateway as [`Command`]s over a bounded channel, so the telegram path takes no lock.
//!
//! Safety: the page renders every text with `textContent` (never as markup) and the
//! Content-Security-Policy allows no inline script, so a meter name or a telegram's text
//! cannot run code; keys and passwords never leave the gateway; state-changing requests need
//! the per-process CSRF token from the page and a same-site fetch, and bodies are bounded.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot, watch};

pub mod added;
mod meter_page;
pub mod wired;

pub use meter_page::MeterRef;

/// Largest request body accepted (a form with a name, a driver and a key is far below it).
pub const MAX_BODY: usize = 16 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const METER_JS: &str = include_str!("assets/meter.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'self'; form-action 'self'; frame-ancestors 'self'";

/// What the gateway last published: the JSON the page shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub json: Arc<str>,
}

/// A change asked for on the page, carried out by the gateway task.
#[derive(Debug)]
pub enum Command {
    /// Try a key on the heard meter's last telegram; answers with what it decoded.
    CheckKey {
        id: String,
        key: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Add a heard meter to the configuration (live, and saved in the state directory).
    AddMeter {
        id: String,
        name: String,
        driver: String,
        key: Option<String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Scans, reads and additions on the wired buses (`wired.rs`).
    Wired(wired::WiredCommand),
    /// A meter's page: its fields and last telegrams explained, as JSON.
    MeterDetail {
        which: MeterRef,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Change a meter added on the page; `key: None` keeps its key. Answers with a message
    /// and the meter's slug (new when renamed).
    EditMeter {
        slug: String,
        name: String,
        driver: String,
        key: Option<String>,
        reply: oneshot::Sender<Result<(String, String), String>>,
    },
    /// Remove a meter added on the page.
    RemoveMeter {
        slug: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Who may use the page.
#[derive(Clone, Default)]
pub struct Access {
    /// HTTP Basic password (any user name).
    pub password: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// When not empty, the only client addresses served.
    pub allow_from: Vec<IpAddr>,
}

struct Shared {
    view: watch::Receiver<View>,
    wired: watch::Receiver<wired::WiredView>,
    commands: mpsc::Sender<Command>,
    csrf: String,
    access: Access,
}

/// A random token for this process: the page reads it, a cross-site form cannot.
fn random_token() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: the standard library's per-process random hash keys instead.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The routes, for [`serve`] and for tests that drive them without a socket.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/meter.js",
            get(|| async { asset(METER_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/api/meter", get(meter_page::meter))
        .route("/api/meter/edit", post(meter_page::edit))
        .route("/api/meter/remove", post(meter_page::remove))
        .route("/api/overview", get(overview))
        .route("/events", get(events))
        .route("/api/check-key", post(check_key))
        .route("/api/meters", post(add_meter))
        .merge(wired::routes())
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// Serves the page on `listener` until the gateway drops its end of the view channel.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: watch::Receiver<View>,
    wired: watch::Receiver<wired::WiredView>,
    commands: mpsc::Sender<Command>,
    access: Access,
) -> std::io::Result<()> {
    let mut closed = view.clone();
    let shared = Arc::new(Shared {
        view,
        wired,
        commands,
        csrf: random_token(),
        access,
    });
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { while closed.changed().await.is_ok() {} })
        .await
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Equal in time whatever the input: a password is not guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 (RFC 4648) for HTTP Basic credentials; `None` if it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn authorized(access: &Access, headers: &HeaderMap) -> bool {
    if access.password.is_none() && access.token.is_none() {
        return true;
    }
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let (Some(token), Some(given)) = (&access.token, auth.strip_prefix("Bearer ")) {
        return same_secret(token.as_bytes(), given.trim().as_bytes());
    }
    if let (Some(password), Some(given)) = (&access.password, auth.strip_prefix("Basic ")) {
        let Some(pair) = base64_decode(given.trim()) else {
            return false;
        };
        // Any user name: the password is the secret.
        let given = match pair.iter().position(|b| *b == b':') {
            Some(i) => &pair[i + 1..],
            None => return false,
        };
        return same_secret(password.as_bytes(), given);
    }
    false
}

/// Who may ask, and for changes whether the request came from the page itself.
async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = 'checked: {
        let access = &shared.access;
        let ip = peer.ip().to_canonical();
        if !access.allow_from.is_empty() && !access.allow_from.contains(&ip) {
            break 'checked plain(StatusCode::FORBIDDEN, "not an allowed address\n");
        }
        let open = access.password.is_none() && access.token.is_none();
        if open && access.allow_from.is_empty() && !host_is_address(request.headers()) {
            // Without a password, a page asked for by a host name could be a site that pointed
            // its name at this address (DNS rebinding) to use the page as its own.
            break 'checked plain(
                StatusCode::FORBIDDEN,
                "ask for this page by IP address or localhost, or set web.password\n",
            );
        }
        if !authorized(access, request.headers()) {
            let mut r = plain(StatusCode::UNAUTHORIZED, "password needed\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"meterbridge\", charset=\"UTF-8\""),
            );
            break 'checked r;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let headers = request.headers();
            // A browser marks a request another site made; the token is what a cross-site
            // form or script cannot read, so both are required.
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"cross-site");
            let token_ok = headers
                .get("x-csrf-token")
                .is_some_and(|v| same_secret(v.as_bytes(), shared.csrf.as_bytes()));
            if cross_site || !token_ok {
                break 'checked plain(
                    StatusCode::FORBIDDEN,
                    "refused: not sent by the meterbridge page (CSRF token missing or wrong)\n",
                );
            }
        }
        next.run(request).await
    };
    security_headers(response.headers_mut());
    response
}

/// Whether the request's Host is an IP address or `localhost` (with or without a port).
fn host_is_address(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: not a browser on a rebinding name.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn asset(text: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], text).into_response()
}

/// The prefix Home Assistant's ingress serves us under, if it is a plain path: it goes into
/// the page's `<base>`, so anything that could leave the attribute is refused.
fn ingress_prefix(headers: &HeaderMap) -> Option<String> {
    let p = headers.get("x-ingress-path")?.to_str().ok()?;
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && p.len() <= 256
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
    ok.then(|| p.trim_end_matches('/').to_string())
}

async fn index(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let base = match ingress_prefix(&headers) {
        Some(p) => format!("<base href=\"{p}/\">"),
        None => String::new(),
    };
    let html = INDEX_HTML
        .replace("<!--BASE-->", &base)
        .replace("{{CSRF}}", &shared.csrf);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn overview(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.view.borrow().clone();
    json(StatusCode::OK, view.json.to_string())
}

/// The view as server-sent events: the current one at once, then every change.
async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut rx = shared.view.clone();
    rx.mark_changed();
    // Ends when the gateway stops (its sender is dropped).
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let json = rx.borrow_and_update().json.clone();
        Some((Ok(Event::default().event("view").data(&*json)), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A form field of a JSON body, as text.
fn field(body: &serde_json::Value, key: &str) -> Option<String> {
    body.get(key)
        .and_then(|v| v.as_str())
        .map(|s| s.trim().to_string())
}

async fn ask(
    shared: &Shared,
    command: Command,
    answer: oneshot::Receiver<Result<String, String>>,
) -> Response {
    if shared.commands.try_send(command).is_err() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ok": false, "error": "the gateway is busy; try again"}).to_string(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(Ok(message))) => json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "message": message}).to_string(),
        ),
        Ok(Ok(Err(error))) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"ok": false, "error": error}).to_string(),
        ),
        _ => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ok": false, "error": "the gateway did not answer"}).to_string(),
        ),
    }
}

fn parse_body(body: &Bytes) -> Result<serde_json::Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"ok": false, "error": format!("the request is not JSON: {e}")})
                .to_string(),
        ))
    })
}

async fn check_key(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (Some(id), Some(key)) = (field(&body, "id"), field(&body, "key")) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"ok": false, "error": "give id and key"}).to_string(),
        );
    };
    let (reply, answer) = oneshot::channel();
    ask(&shared, Command::CheckKey { id, key, reply }, answer).await
}

async fn add_meter(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (Some(id), Some(name)) = (field(&body, "id"), field(&body, "name")) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"ok": false, "error": "give id and name"}).to_string(),
        );
    };
    let driver = field(&body, "driver")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "auto".into());
    let key = field(&body, "key").filter(|k| !k.is_empty());
    let (reply, answer) = oneshot::channel();
    ask(
        &shared,
        Command::AddMeter {
            id,
            name,
            driver,
            key,
            reply,
        },
        answer,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_basic_credentials() {
        assert_eq!(
            base64_decode("dXNlcjpzM2NyZXQ=").as_deref(),
            Some(&b"user:s3cret"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("a b"), None);
    }

    #[test]
    fn hosts_that_name_an_address() {
        for (host, ok) in [
            ("127.0.0.1:8099", true),
            ("localhost:8099", true),
            ("[::1]:8099", true),
            ("192.168.1.5", true),
            ("evil.example:8099", false),
            ("127.0.0.1.nip.io", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(host_is_address(&h), ok, "{host}");
        }
    }

    #[test]
    fn ingress_prefixes_that_could_leave_the_attribute_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ingress-path",
            HeaderValue::from_static("/api/hassio_ingress/AbC-1_x"),
        );
        assert_eq!(
            ingress_prefix(&h).as_deref(),
            Some("/api/hassio_ingress/AbC-1_x")
        );
        for bad in ["/a\"><script>", "//evil.example/x", "relative/path", "/a b"] {
            let mut h = HeaderMap::new();
            h.insert("x-ingress-path", HeaderValue::from_str(bad).unwrap());
            assert_eq!(ingress_prefix(&h), None, "{bad}");
        }
    }
}
