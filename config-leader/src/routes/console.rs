//! The console: plain HTML, CSS and JavaScript modules embedded in the binary, served same-origin at
//! `/console/` with strict headers on every answer. No runtime folder, no CDN, no third-party script: the
//! page talks only to this leader's JSON API, the token in `Authorization` (never a cookie), so there is no
//! CSRF surface; the CSP refuses inline script and style, `eval`, framing and any other origin.

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// Every file of the console: (name, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "screens.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/screens.js"),
    ),
    (
        "settings.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/settings.js"),
    ),
    (
        "rollouts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/rollouts.js"),
    ),
    (
        "zones.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/zones.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

/// What the page may do: its own scripts, styles, images and API calls; nothing inline, nothing framed.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(to_index))
        .route("/console/", get(index))
        .route("/console/{file}", get(file))
}

async fn to_index() -> Response {
    secured((StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/console/")]).into_response())
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

fn serve(name: &str) -> Response {
    let response = match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, bytes)) => ([(CONTENT_TYPE, *kind)], *bytes).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    };
    secured(response)
}

/// The headers of every console answer.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
