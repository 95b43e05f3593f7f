//! Masking secret values out of text that leaves a machine: container log tails and error lines in apply
//! reports, internal values in previews. A value is a secret candidate when it is at least
//! [`MIN_SECRET_LEN`] characters long (shorter ones would mask ordinary words).

use crate::{ApplyReport, BASE64, ConfFile};

/// Shortest value masked.
pub const MIN_SECRET_LEN: usize = 8;
/// What a masked value becomes.
pub const MASK: &str = "***";

/// Words in a key name that say its value is a secret (lower case).
const SECRET_WORDS: [&str; 7] = [
    "pass",
    "secret",
    "key",
    "token",
    "auth",
    "credential",
    "private",
];

/// A set of values to mask, longest first (a secret containing another is masked whole).
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Keeps the values of [`MIN_SECRET_LEN`] characters or more.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// The values of JSON settings: strings as they are, other scalars and objects as JSON text.
    pub fn from_json_values<'a>(values: impl IntoIterator<Item = &'a serde_json::Value>) -> Self {
        Self::new(values.into_iter().filter_map(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null | serde_json::Value::Bool(_) => None,
            other => Some(other.to_string()),
        }))
    }

    /// What a follower can tell from its files alone: the values of keys whose name looks secret
    /// (`password: …`, `"apiKey": "…"`, `SMTP_PASS=…`) and the passwords of URLs (`scheme://user:pass@host`).
    pub fn from_conf_files(files: &[ConfFile]) -> Self {
        let mut values = Vec::new();
        for file in files
            .iter()
            .filter(|f| f.encoding.as_deref() != Some(BASE64))
        {
            for line in file.content.lines() {
                values.extend(secret_of_line(line));
                values.extend(url_passwords(line));
            }
        }
        Self::new(values)
    }

    /// The values masked, longest first.
    pub fn values(&self) -> &[String] {
        &self.secrets
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            if text.contains(secret.as_str()) {
                text.replace(secret.as_str(), MASK)
            } else {
                text
            }
        })
    }

    /// Masks the log tail and the error lines of a report.
    pub fn scrub_report(&self, report: &mut ApplyReport) {
        if self.is_empty() {
            return;
        }
        if let Some(unhealthy) = &mut report.unhealthy {
            for line in &mut unhealthy.log_tail {
                *line = self.scrub(line);
            }
        }
        for line in &mut report.errors {
            *line = self.scrub(line);
        }
    }
}

/// `name: value`, `name = value`, `"name": "value"`, `NAME=value` with a secret-looking name.
fn secret_of_line(line: &str) -> Option<String> {
    let split = line.find([':', '='])?;
    let (name, rest) = line.split_at(split);
    let name = name
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_lowercase();
    if !SECRET_WORDS.iter().any(|word| name.contains(word)) {
        return None;
    }
    let value = rest[1..]
        .trim()
        .trim_end_matches(',')
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    (!value.is_empty()).then(|| value.to_owned())
}

fn url_passwords(line: &str) -> Vec<String> {
    line.match_indices("://")
        .filter_map(|(at, _)| {
            let rest = &line[at + 3..];
            let authority = rest.split(['/', ' ', '"', '\'']).next()?;
            let userinfo = authority.rsplit_once('@')?.0;
            let password = userinfo.split_once(':')?.1;
            (!password.is_empty()).then(|| password.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> ConfFile {
        ConfFile {
            path: "/core/conf/core.yml".into(),
            content: content.into(),
            encoding: None,
        }
    }

    #[test]
    fn values_of_secret_keys_and_url_passwords_are_masked() {
        let scrubber = Scrubber::from_conf_files(&[file(
            "smtp:\n  password: \"hunter2-long\"\n  host: smtp.example.com\n\"apiKey\": \"k-0123456789\",\n\
             SMTP_PASS=p@ssw0rd!!\nmongo: mongodb://admin:db-pass-9876@mongo:27017/db\nshort_key: abc\n",
        )]);
        let tail = "connecting to mongodb://admin:db-pass-9876@mongo:27017 as hunter2-long \
                    (key k-0123456789, pass p@ssw0rd!!) on smtp.example.com with abc";
        let scrubbed = scrubber.scrub(tail);
        for secret in ["hunter2-long", "k-0123456789", "p@ssw0rd!!", "db-pass-9876"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(scrubbed.contains("smtp.example.com"), "not a secret key");
        assert!(scrubbed.contains("abc"), "too short to mask");
    }

    #[test]
    fn a_report_log_tail_and_errors_are_scrubbed_longest_first() {
        let scrubber = Scrubber::new(["secret-one".to_owned(), "secret-one-longer".to_owned()]);
        let mut report = ApplyReport {
            unhealthy: Some(crate::UnhealthyService {
                service: "core".into(),
                state: "exited".into(),
                log_tail: vec!["auth failed for secret-one-longer".into()],
            }),
            errors: vec!["secret-one".into()],
            revision: None,
            current_revision: None,
            outcome: crate::ApplyOutcome::Reverted,
            written: Vec::new(),
            removed: Vec::new(),
            rejected: Vec::new(),
            restarted: Vec::new(),
            apply_ms: 0,
            restart_ms: 0,
            health_ms: 0,
            at: 0,
        };
        scrubber.scrub_report(&mut report);
        assert_eq!(report.unhealthy.unwrap().log_tail, ["auth failed for ***"]);
        assert_eq!(report.errors, ["***"]);
    }
}
