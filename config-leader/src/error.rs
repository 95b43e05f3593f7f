//! The leader's one error type, and its one conversion into an HTTP answer
//! (`{"error": {"id", "message"}}`, the legacy `message` kept and a stable `id` added).

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pryv_protocol::ErrorBody;

/// The cause of a 5xx answer, carried to the request log (which logs it once, never the body's generic text).
#[derive(Debug, Clone)]
pub struct Failure(pub String);

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
    #[error(
        "the settings changed since revision {expected} (now revision {current}): read them again (GET /admin/settings), redo the change on the current values, and send If-Match: \"{current}\""
    )]
    StaleRevision { expected: i64, current: i64 },
    #[error("{}: a symlink to {}, outside the templates folder and templates.allowLinksTo; replace it with the file, or add its folder to templates.allowLinksTo", link.display(), target.display())]
    Link { link: PathBuf, target: PathBuf },
    #[error("{}: {problem}", path.display())]
    Database { path: PathBuf, problem: String },
    /// A file system call that failed: what it was doing (`read`, `list`, `create`...), on which path.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot write: {source}; check the free space and the folder's permissions", path.display())]
    Write {
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
    #[error(
        "role '{0}': its templates folder has no file (moved, or being replaced?); followers keep the files they have until it is filled again"
    )]
    EmptyRole(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("missing or invalid key")]
    InvalidKey,
    /// Authentication failed (bad token, bad credentials); the message never says which part was wrong.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("too many failed attempts; retry in {0} s")]
    TooManyAttempts(u64),
    /// New settings would break rendering; nothing was saved.
    #[error("the new settings do not render: {}", .0.join("; "))]
    InvalidSettings(Vec<String>),
    /// A peer the leader calls (register, core) is unreachable, misconfigured or failing.
    #[error("{0}")]
    Unavailable(String),
    /// What was not found, said in the message (`no admin user 'x'`, `no such resource`).
    #[error("{0}")]
    NotFound(String),
    /// A blocking task (render, save, apply, password check) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A database statement that failed (the database was readable at start).
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The settings repository (`gitRepoPath`): a git command that failed, with what git said.
    #[error("settings repository: {0}")]
    Git(String),
    /// The listening socket failed.
    #[error("cannot serve: {0}")]
    Listen(std::io::Error),
    /// A value of ours that could not be encoded (never the caller's input: that is a bad request).
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The etcd store (`store.etcd`) did not answer or refused: what every member said.
    #[error(
        "etcd store: {0}; check that a majority of the etcd members run and are reachable from this replica"
    )]
    Etcd(String),
    /// This replica has not reached a quorum of etcd for longer than `isolatedAfterSeconds`.
    #[error(
        "this leader replica is cut off from its etcd store (no quorum answer for {0} s); it refuses changes until it reaches it again: retry through another replica"
    )]
    Isolated(u64),
    /// Another replica saved the revision this save was based on first (etcd mode); retried, or a 409.
    #[error("another leader replica saved revision {0} at the same time; retry")]
    SaveRace(i64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    fn status_and_id(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidKey => (StatusCode::UNAUTHORIZED, "invalid-key"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid-request"),
            Error::InvalidSettings(_) => (StatusCode::BAD_REQUEST, "invalid-settings"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::StaleRevision { .. } => (StatusCode::PRECONDITION_FAILED, "stale-revision"),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            Error::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too-many-attempts"),
            Error::RoleNotFound(_) => (StatusCode::NOT_FOUND, "role-not-found"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            Error::Unavailable(_) => (StatusCode::BAD_GATEWAY, "upstream-unavailable"),
            Error::Render { .. } | Error::EmptyRole(_) | Error::Link { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "render-failed")
            }
            Error::Platform { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid-platform-settings",
            ),
            Error::Write { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "write-failed"),
            Error::Etcd(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            Error::Isolated(_) => (StatusCode::SERVICE_UNAVAILABLE, "leader-isolated"),
            Error::SaveRace(_) => (StatusCode::CONFLICT, "conflict"),
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
        // Render, platform, write and peer errors name what an operator must fix, so they are shown; any other
        // 5xx is answered generically. Every 5xx is logged once, with its cause, by the request log
        // (`routes::log_request` reads the `Failure` this answer carries).
        let shown = matches!(
            self,
            Error::Unavailable(_)
                | Error::Etcd(_)
                | Error::Isolated(_)
                | Error::Render { .. }
                | Error::Platform { .. }
                | Error::EmptyRole(_)
                | Error::Link { .. }
                | Error::Write { .. }
        );
        let message = if status.is_server_error() && !shown {
            "unexpected error; see the leader's log".to_owned()
        } else {
            self.to_string()
        };
        let failure = status.is_server_error().then(|| Failure(self.to_string()));
        if let Error::StaleRevision { current, .. } = self {
            // The current revision in the body and as the ETag: what the next If-Match must name.
            let body = serde_json::json!({
                "error": {"id": id, "message": message},
                "currentRevision": current,
            });
            let mut response = (status, Json(body)).into_response();
            if let Some(failure) = failure {
                response.extensions_mut().insert(failure);
            }
            if let Ok(value) = axum::http::HeaderValue::from_str(&format!("\"{current}\"")) {
                response
                    .headers_mut()
                    .insert(axum::http::header::ETAG, value);
            }
            return response;
        }
        let mut response = (status, Json(ErrorBody::new(id, message))).into_response();
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        if let Error::TooManyAttempts(seconds) = self
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn message(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        body["error"]["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_5xx_carries_its_cause_to_the_request_log_and_answers_generically() {
        let response = Error::Internal("the disk is on fire".into()).to_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let failure = response.extensions().get::<Failure>().cloned().unwrap();
        assert!(failure.0.contains("the disk is on fire"), "{failure:?}");
        assert_eq!(
            message(response).await,
            "unexpected error; see the leader's log"
        );

        // An error the operator must fix is shown as well as logged.
        let write = Error::Write {
            path: "/etc/pryv/platform.yml".into(),
            source: std::io::Error::other("read-only file system"),
        };
        let response = write.to_response();
        assert!(response.extensions().get::<Failure>().is_some());
        assert!(message(response).await.contains("cannot write"));

        // A 4xx is the caller's: nothing to log as a failure.
        let response = Error::BadRequest("no".into()).to_response();
        assert!(response.extensions().get::<Failure>().is_none());
    }
}
