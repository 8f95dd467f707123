//! A meter's own page: `GET api/meter?slug=…` (a configured meter) or `?heard=…` (a meter
//! heard nearby) gives its live fields and its last telegrams, each explained layer by layer
//! and record by record as `decode --format json` does; the page (`meter.js`) shows them and
//! offers a telegram's hex and driver for a bug report. The gateway task builds the answer:
//! only it holds the telegrams and the keys, and keys never leave it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use tokio::sync::oneshot;

use axum::body::Bytes;

use super::{ask, field, json, parse_body, Command, Shared};

/// Which meter a page is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterRef {
    /// A configured meter, by its slug (unique: it names its MQTT topics).
    Configured(String),
    /// A wireless meter heard but not configured, by its id.
    Heard(String),
}

/// `slug=…` or `heard=…` from the query. Slugs are `[a-z0-9_-]` and ids hex digits, so
/// anything else (and any percent escape) names no meter and is refused as it is.
fn which(uri: &Uri) -> Option<MeterRef> {
    let (key, value) = uri.query()?.split_once('=')?;
    let plain = |max: usize| {
        !value.is_empty()
            && value.len() <= max
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    match key {
        "slug" if plain(200) => Some(MeterRef::Configured(value.to_string())),
        "heard" if plain(32) => Some(MeterRef::Heard(value.to_ascii_lowercase())),
        _ => None,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        serde_json::json!({"ok": false, "error": message}).to_string(),
    )
}

pub(super) async fn meter(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let Some(which) = which(&uri) else {
        return error(StatusCode::BAD_REQUEST, "give slug=… or heard=…");
    };
    let (reply, answer) = oneshot::channel();
    if shared
        .commands
        .try_send(Command::MeterDetail { which, reply })
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is busy; try again",
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(Ok(detail))) => json(StatusCode::OK, detail),
        Ok(Ok(Err(e))) => error(StatusCode::NOT_FOUND, &e),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway did not answer",
        ),
    }
}

/// `POST api/meter/edit` `{"slug", "name", "driver", "key"}` (an empty key keeps the saved
/// one) → `{"ok": true, "message", "slug"}` or 422 with `error`.
pub(super) async fn edit(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (Some(slug), Some(name)) = (field(&body, "slug"), field(&body, "name")) else {
        return error(StatusCode::BAD_REQUEST, "give slug and name");
    };
    let driver = field(&body, "driver")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "auto".into());
    let key = field(&body, "key").filter(|k| !k.is_empty());
    let (reply, answer) = oneshot::channel();
    let command = Command::EditMeter {
        slug,
        name,
        driver,
        key,
        reply,
    };
    if shared.commands.try_send(command).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is busy; try again",
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(Ok((message, slug)))) => json(
            StatusCode::OK,
            serde_json::json!({"ok": true, "message": message, "slug": slug}).to_string(),
        ),
        Ok(Ok(Err(e))) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway did not answer",
        ),
    }
}

/// `POST api/meter/remove` `{"slug"}`.
pub(super) async fn remove(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(slug) = field(&body, "slug") else {
        return error(StatusCode::BAD_REQUEST, "give slug");
    };
    let (reply, answer) = oneshot::channel();
    ask(&shared, Command::RemoveMeter { slug, reply }, answer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_slugs_and_ids_name_a_meter() {
        let q = |s: &str| which(&s.parse::<Uri>().unwrap());
        assert_eq!(
            q("/api/meter?slug=hot_water"),
            Some(MeterRef::Configured("hot_water".into()))
        );
        assert_eq!(
            q("/api/meter?heard=41235813"),
            Some(MeterRef::Heard("41235813".into()))
        );
        for bad in [
            "/api/meter",
            "/api/meter?slug=",
            "/api/meter?slug=a%20b",
            "/api/meter?name=x",
            "/api/meter?slug=a/b",
        ] {
            assert_eq!(q(bad), None, "{bad}");
        }
    }
}
