//! Pryv.io accounts (not admin users), administered through the register and the cores with the system keys of
//! `internals` (`REGISTER_SYSTEM_KEY_1`, `CORE_SYSTEM_KEY`): look one up, delete it everywhere, reset its MFA.
//! The register is the legacy config key `registerUrl`; the cores are `platformUsers.coreUrls`, else the URLs
//! of the followers of role `core` (and `platformUsers.singleNodeCoreUrl` for role `singlenode`). Every call
//! has a timeout; an unreachable or failing peer is a 502 naming it.

use serde_json::Value;

use crate::config::Config;
use crate::error::Error;
use crate::secret::Secret;

const REGISTER_KEY: &str = "REGISTER_SYSTEM_KEY_1";
const CORE_KEY: &str = "CORE_SYSTEM_KEY";

/// Client of the register and the cores.
pub struct PlatformUsers {
    client: reqwest::Client,
    register_url: Option<String>,
    core_urls: Vec<String>,
    register_key: Option<Secret>,
    core_key: Option<Secret>,
}

/// What one peer answered.
struct Answer {
    status: reqwest::StatusCode,
    body: Value,
}

impl PlatformUsers {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(
                pryv_daemon::client_tls(config.notify_ca_file.as_deref()).map_err(Error::Tls)?,
            )
            .connect_timeout(config.platform_users_timeout)
            .timeout(config.platform_users_timeout)
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        let core_urls = config.core_urls.clone().unwrap_or_else(|| {
            config
                .followers
                .iter()
                .filter_map(|f| match f.role.as_str() {
                    "core" => Some(f.url.clone()),
                    "singlenode" => Some(config.single_node_core_url.clone()),
                    _ => None,
                })
                .collect()
        });
        let secret = |name: &str| {
            config
                .internals
                .0
                .get(name)
                .and_then(Value::as_str)
                .map(|s| Secret::new(s.to_owned()))
        };
        Ok(Self {
            client,
            register_url: config.register_url.clone(),
            core_urls: core_urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            register_key: secret(REGISTER_KEY),
            core_key: secret(CORE_KEY),
        })
    }

    fn register(&self) -> Result<(&str, &Secret), Error> {
        let url = self.register_url.as_deref().ok_or_else(|| {
            Error::Unavailable(
                "no register configured: set registerUrl in config-leader.json (e.g. \"https://reg.pryv.me\")"
                    .into(),
            )
        })?;
        let key = self.register_key.as_ref().ok_or_else(|| {
            Error::Unavailable(format!(
                "internals.{REGISTER_KEY} is not set; the register needs it"
            ))
        })?;
        Ok((url, key))
    }

    fn core_key(&self) -> Result<&Secret, Error> {
        self.core_key.as_ref().ok_or_else(|| {
            Error::Unavailable(format!(
                "internals.{CORE_KEY} is not set; the cores need it"
            ))
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        key: Option<&Secret>,
        peer: &str,
    ) -> Result<Answer, Error> {
        let mut request = self.client.request(method, url);
        if let Some(key) = key {
            request = request.header("authorization", key.expose());
        }
        let response = request.send().await.map_err(|err| {
            Error::Unavailable(format!(
                "{peer} at {} did not answer: {}",
                origin_of(url),
                pryv_daemon::error_chain(&err)
            ))
        })?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// The register's record of `username`.
    pub async fn get(&self, username: &str) -> Result<Value, Error> {
        let (register, key) = self.register()?;
        let answer = self
            .call(
                reqwest::Method::GET,
                &format!("{register}/admin/users/{username}"),
                Some(key),
                "the register",
            )
            .await?;
        match answer.status {
            s if s.is_success() => Ok(answer.body),
            reqwest::StatusCode::NOT_FOUND => Err(Error::NotFound(format!(
                "user with username \"{username}\" not found on register at {register}"
            ))),
            other => Err(unexpected("the register", register, other, &answer.body)),
        }
    }

    /// Deletes `username` on every core (a 404 means it lives elsewhere or is gone), then on the register.
    pub async fn delete(&self, username: &str) -> Result<(), Error> {
        let (register, register_key) = self.register()?;
        let core_key = self.core_key()?;
        if self.core_urls.is_empty() {
            return Err(Error::Unavailable(
                "no core known: add followers of role core or set platformUsers.coreUrls".into(),
            ));
        }
        let calls = self.core_urls.iter().map(|core| async move {
            let url = format!("{core}/users/{username}");
            self.delete_on(core, &url, core_key, "the core").await
        });
        for outcome in futures::future::join_all(calls).await {
            outcome?;
        }
        let url = format!("{register}/users/{username}?onlyReg=true");
        self.delete_on(register, &url, register_key, "the register")
            .await
    }

    /// A deletion on one peer; a 404 means the account is not (or no longer) there, which is fine.
    async fn delete_on(
        &self,
        base: &str,
        url: &str,
        key: &Secret,
        peer: &str,
    ) -> Result<(), Error> {
        let answer = self
            .call(reqwest::Method::DELETE, url, Some(key), peer)
            .await?;
        match answer.status {
            s if s.is_success() || s == reqwest::StatusCode::NOT_FOUND => Ok(()),
            other => Err(unexpected(peer, base, other, &answer.body)),
        }
    }

    /// Removes `username`'s MFA on its core (found through the register).
    pub async fn delete_mfa(&self, username: &str) -> Result<(), Error> {
        let (register, _) = self.register()?;
        let core_key = self.core_key()?;
        let answer = self
            .call(
                reqwest::Method::GET,
                &format!("{register}/cores?username={username}"),
                None,
                "the register",
            )
            .await?;
        if !answer.status.is_success() {
            return Err(unexpected(
                "the register",
                register,
                answer.status,
                &answer.body,
            ));
        }
        let core = answer.body["core"]["url"]
            .as_str()
            .map(|u| u.trim_end_matches('/').to_owned())
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the register at {register} did not name the core of \"{username}\""
                ))
            })?;
        let answer = self
            .call(
                reqwest::Method::DELETE,
                &format!("{core}/system/users/{username}/mfa"),
                Some(core_key),
                "the core",
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else if answer.status == reqwest::StatusCode::NOT_FOUND {
            Err(Error::NotFound(format!(
                "user with username \"{username}\" not found on core at {core}"
            )))
        } else {
            Err(unexpected("the core", &core, answer.status, &answer.body))
        }
    }
}

/// Pryv.io usernames: letters, digits and dashes (never a path or a query in the URLs built from them).
pub fn validate_username(username: &str) -> Result<(), Error> {
    let ok = (1..=100).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{username:?} is not a Pryv.io username (letters, digits, '-', '_', '.')"
        )))
    }
}

fn unexpected(peer: &str, url: &str, status: reqwest::StatusCode, body: &Value) -> Error {
    let detail = body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string().chars().take(200).collect());
    Error::Unavailable(format!(
        "{peer} at {} answered {status}: {detail}",
        origin_of(url)
    ))
}

/// Scheme, host and port of `url` (never a path that could carry a username into an error twice).
fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.origin().ascii_serialization())
}
