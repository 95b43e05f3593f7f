//! Prometheus metrics of both daemons: one process-wide recorder (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`), the standard process metrics (`metrics-process`: RSS, CPU, open file
//! descriptors, start time), and the `GET /metrics` route, open by default or behind a bearer token.
//!
//! Durations are histograms in seconds. Gauges not set for [`GAUGE_IDLE`] disappear, so an info series of an
//! old revision does not live forever: the daemons set their gauges at every scrape.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use subtle::ConstantTimeEq;

/// Gauges untouched for this long are dropped from the exposition.
pub const GAUGE_IDLE: Duration = Duration::from_secs(600);

/// Histogram buckets of request and command durations, in seconds (100 µs to 5 min).
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

struct Installed {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the process-wide recorder once (later calls are no-ops). Without it (another recorder was set
/// first), metrics calls do nothing and `/metrics` says so.
pub fn install() {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            .ok()?
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics is empty");
            return None;
        }
        let process = metrics_process::Collector::default();
        process.describe();
        Some(Installed { handle, process })
    });
}

/// The exposition text, after `refresh` set the gauges that are computed at scrape time.
pub fn render(refresh: &dyn Fn()) -> Option<String> {
    let installed = RECORDER.get()?.as_ref()?;
    installed.process.collect();
    refresh();
    Some(installed.handle.render())
}

/// `GET /metrics`: `refresh` sets the scrape-time gauges; `token`, when set, must come as `Bearer <token>`.
pub fn route<S: Clone + Send + Sync + 'static>(
    token: Option<String>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> Router<S> {
    install();
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let token = token.clone();
            let refresh = refresh.clone();
            async move { scrape(&headers, token.as_deref(), &*refresh) }
        }),
    )
}

fn scrape(headers: &HeaderMap, token: Option<&str>, refresh: &dyn Fn()) -> Response {
    if let Some(expected) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            let body = serde_json::json!({"error": {"id": "invalid-key", "message": "send the metrics token as Authorization: Bearer <token>"}});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    }
    match render(refresh) {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_metrics(app: &Router, auth: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get("/metrics");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn exposes_process_metrics_what_was_recorded_and_honours_the_token() {
        let refreshed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refreshed.clone();
        let app: Router = route(
            Some("scrape-token".into()),
            Arc::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::gauge!("pryv_test_gauge").set(7.0);
            }),
        );
        metrics::counter!("pryv_test_events_total", "kind" => "a").increment(3);
        metrics::histogram!("pryv_test_duration_seconds").record(0.002);

        assert_eq!(get_metrics(&app, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get_metrics(&app, Some("Bearer wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, text) = get_metrics(&app, Some("Bearer scrape-token")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("pryv_test_events_total{kind=\"a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("pryv_test_duration_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(text.contains("pryv_test_gauge 7"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(text.contains("process_open_fds"), "{text}");
        assert!(text.contains("process_start_time_seconds"), "{text}");
        assert_eq!(refreshed.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
