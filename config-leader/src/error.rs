//! The leader's one error type, and its one conversion into an HTTP answer
//! (`{"error": {"id", "message"}}`, the legacy `message` kept and a stable `id` added).

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pryv_protocol::ErrorBody;

/// Everything that can go wrong in the leader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot save generated secrets: {source}; make the file writable by the leader", path.display())]
    ConfigWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}", path.display(), problems.join(&format!("\n{}: ", path.display())))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{}: {source}", path.display())]
    Platform {
        path: PathBuf,
        source: pryv_render::Error,
    },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration folder not found for role '{0}'")]
    RoleNotFound(String),
    #[error("role '{role}': {file}: {source}")]
    Render {
        role: String,
        file: String,
        source: pryv_render::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("missing or invalid key")]
    InvalidKey,
    #[error("no such resource")]
    NotFound,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    fn status_and_id(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidKey => (StatusCode::UNAUTHORIZED, "invalid-key"),
            Error::RoleNotFound(_) => (StatusCode::NOT_FOUND, "role-not-found"),
            Error::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            Error::Render { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "render-failed"),
            Error::Platform { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid-platform-settings",
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected-error"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

impl Error {
    /// The JSON answer for this error (by reference, so cached errors shared in an `Arc` answer too).
    pub fn to_response(&self) -> Response {
        let (status, id) = self.status_and_id();
        // Render and platform errors name a file and a reason an operator must fix, so they are shown; any
        // other 5xx is logged here once and answered generically.
        let message = match self {
            Error::Render { .. } | Error::Platform { .. } => {
                tracing::error!(error = %self, "cannot render configuration");
                self.to_string()
            }
            _ if status.is_server_error() => {
                tracing::error!(error = %self, "request failed");
                "unexpected error; see the leader's log".to_owned()
            }
            _ => self.to_string(),
        };
        (status, Json(ErrorBody::new(id, message))).into_response()
    }
}
