//! The follower's one error type and its one conversion into an HTTP answer.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pryv_protocol::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {}", path.display(), problems.join(&format!("\n{}: ", path.display())))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// The leader could not be reached or answered something unusable.
    #[error("cannot fetch configuration from the leader: {0}")]
    Leader(String),
    /// The fetched tree is not (wholly) on disk: files refused or not writable, or the tree refused whole.
    #[error("{0}")]
    ApplyIncomplete(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("missing or invalid key")]
    InvalidKey,
    #[error("no such resource")]
    NotFound,
    /// A file system call that failed: what it was doing, on which path.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record under the bookkeeping folder that could not be read, parsed, written or removed.
    #[error("cannot {action} {}: {reason}", path.display())]
    Record {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A record the follower owes could not be saved: which one, and what that breaks.
    #[error("{source} ({what}); {consequence}. Free space or make the folder writable")]
    Unsaved {
        what: &'static str,
        consequence: &'static str,
        source: Box<Error>,
    },
    /// The tree was refused whole, nothing touched; the reason says what to do.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Tls(String),
    /// A blocking task (render, save, apply, password check) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The listening socket failed.
    #[error("cannot serve: {0}")]
    Listen(std::io::Error),
    /// A value of ours that could not be encoded (never the caller's input: that is a bad request).
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The same failure again, for a second caller (a record error keeps its fields; others their text).
    pub fn replay(&self) -> Error {
        match self {
            Error::Record {
                action,
                path,
                reason,
            } => Error::Record {
                action,
                path: path.clone(),
                reason: reason.clone(),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, id) = match &self {
            Error::Leader(_) => (StatusCode::BAD_GATEWAY, "leader-unavailable"),
            Error::ApplyIncomplete(_) => (StatusCode::INTERNAL_SERVER_ERROR, "apply-incomplete"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid-request"),
            Error::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            Error::InvalidKey => (StatusCode::UNAUTHORIZED, "invalid-key"),
            Error::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected-error"),
        };
        let message = if matches!(
            self,
            Error::Io { .. }
                | Error::Record { .. }
                | Error::Unsaved { .. }
                | Error::Task(_)
                | Error::Json(_)
                | Error::Internal(_)
        ) {
            tracing::error!(error = %self, "request failed");
            "unexpected error; see the follower's log".to_owned()
        } else {
            self.to_string()
        };
        (status, Json(ErrorBody::new(id, message))).into_response()
    }
}
