//! Wire types shared by the leader and the follower: the JSON bodies of `GET /conf`, `POST /notify` and the
//! error envelope. Pure data: no I/O, no HTTP client or server.
//!
//! Every field added beyond the legacy contract is optional, so an old follower that reads only `files` (or an
//! old leader that sends only `files`) keeps working.

pub mod follower_file;
mod report;
pub mod scrub;
mod secret;

pub use report::{ApplyOutcome, ApplyReport, UnhealthyService};

pub use scrub::Scrubber;
pub use secret::{Secret, key_digest};
use serde::{Deserialize, Serialize};

/// Header name used for follower keys, admin keys and login tokens.
pub const AUTH_HEADER: &str = "authorization";
/// Query parameter accepted in place of the `Authorization` header.
pub const AUTH_QUERY: &str = "auth";
/// Header of every `GET /conf` answer of a leader that knows it: the settings revision the tree was rendered
/// from. A follower never takes a tree of an older one than it applied (a lagging replica cannot move it back).
pub const STORE_REVISION_HEADER: &str = "x-pryv-store-revision";
/// Value of [`ConfFile::encoding`] for files that are not UTF-8 text.
pub const BASE64: &str = "base64";

/// Body of `GET /conf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfResponse {
    /// One entry per file of the role's tree, in a stable order.
    pub files: Vec<ConfFile>,
    /// Hash of the rendered tree; also sent as the `ETag`. Absent from legacy leaders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One file of a role's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfFile {
    /// Path relative to the role folder, with one leading `/` (`/core/conf/core.yml`).
    pub path: String,
    /// UTF-8 text, or base64 when [`ConfFile::encoding`] says so.
    pub content: String,
    /// `Some("base64")` for binary files; absent for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// Optional body of `POST /notify` (leader → follower) and `POST /admin/notify` (operator → leader).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// Restrict restarts to these services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    /// Restart the listed services (all when none are listed) even if none of their files changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Revision the leader expects the follower to fetch (added by our leader, ignored by old followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Apply a tree even if it removes more of the follower's files than its guard allows (the operator
    /// really emptied a role).
    #[serde(
        default,
        rename = "confirmRemovals",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub confirm_removals: bool,
    /// The settings revision in force at the notifying leader: a tree (or a 304) of an older one comes from a
    /// replica that has not caught up, and the follower asks another (ignored by old followers).
    #[serde(
        default,
        rename = "storeRevision",
        skip_serializing_if = "Option::is_none"
    )]
    pub store_revision: Option<i64>,
}

/// Body of a successful `POST /notify` on a follower.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResponse {
    /// Paths written (legacy field).
    pub files: Vec<String>,
    /// Number of files whose bytes were already up to date.
    #[serde(default)]
    pub unchanged: usize,
    /// Paths removed because the leader no longer sends them.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Entries refused, with the reason.
    #[serde(default)]
    pub rejected: Vec<RejectedFile>,
    /// Revision applied, when the leader gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Services restarted (or about to be) because of this notification.
    #[serde(default)]
    pub restarted: Vec<String>,
    /// Services named in the notification that this machine does not run (nothing to do for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Why the leader's tree was not applied at all (a revision this follower reverted before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What kept the apply from being complete besides refused files: a record of the follower's own (its
    /// manifest, its restart queue) it could not read or save, files it could not account for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A file entry the follower refused to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedFile {
    pub path: String,
    pub reason: String,
}

/// The JSON error envelope: `{"error": {"id": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`]: a stable machine id and a human message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub id: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                id: id.into(),
                message: message.into(),
            },
        }
    }
}

/// Extracts a key from an `Authorization` header value: the raw value (legacy) or a `Bearer` token.
pub fn key_from_authorization(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value,
    }
}

/// The credential of a request: the `Authorization` header (raw or `Bearer`) when present and not empty, else
/// the `auth` query parameter (both are used in the field).
pub fn request_credential<'a>(
    authorization: Option<&'a str>,
    query_auth: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .map(key_from_authorization)
        .filter(|k| !k.is_empty())
        .or(query_auth.filter(|k| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_conf_body_without_new_fields_parses() {
        let body = r#"{"files":[{"path":"/core/conf/core.yml","content":"a: 1"}]}"#;
        let parsed: ConfResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.files[0].path, "/core/conf/core.yml");
        assert_eq!(parsed.revision, None);
        assert_eq!(parsed.files[0].encoding, None);
    }

    #[test]
    fn text_entries_serialize_without_encoding_field() {
        let file = ConfFile {
            path: "/a".into(),
            content: "x".into(),
            encoding: None,
        };
        assert_eq!(
            serde_json::to_string(&file).unwrap(),
            r#"{"path":"/a","content":"x"}"#
        );
    }

    #[test]
    fn authorization_accepts_raw_and_bearer() {
        assert_eq!(key_from_authorization("abc"), "abc");
        assert_eq!(key_from_authorization("Bearer abc"), "abc");
        assert_eq!(key_from_authorization("bearer  abc "), "abc");
    }

    #[test]
    fn header_wins_over_query_and_empty_values_do_not_count() {
        assert_eq!(request_credential(Some("h"), Some("q")), Some("h"));
        assert_eq!(request_credential(Some(""), Some("q")), Some("q"));
        assert_eq!(request_credential(None, Some("")), None);
        assert_eq!(request_credential(None, None), None);
    }

    #[test]
    fn empty_notify_body_means_everything() {
        let parsed: NotifyRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, NotifyRequest::default());
    }
}
