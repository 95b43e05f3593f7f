//! CORS for the admin routes: the admin web app runs on another origin (`https://adm.<DOMAIN>`) and calls the
//! leader from the browser. Only allowed origins get CORS headers (the legacy leader reflected any origin):
//! the configured `cors.allowedOrigins`, or by default `https://adm.<DOMAIN>` with the platform's current
//! DOMAIN; `*` only when the operator writes it.

use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::AppState;

/// The CORS layer of the admin routes (answers preflight `OPTIONS` itself).
pub fn layer(state: &AppState) -> CorsLayer {
    let allow = match state.admin.cors_origins.clone() {
        Some(origins) if origins.iter().any(|o| o.trim() == "*") => AllowOrigin::any(),
        Some(origins) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok()),
        ),
        None => {
            let admin = state.admin.clone();
            AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                admin.settings.domain().is_some_and(|domain| {
                    origin.as_bytes() == format!("https://adm.{domain}").as_bytes()
                })
            })
        }
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}
