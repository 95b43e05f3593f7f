//! The HTTP client to the leader: one shared `reqwest::Client` (rustls with ring; system roots plus an
//! optional private CA), connect and request timeouts, `If-None-Match` with the last revision.

use std::time::Duration;

use pryv_protocol::{ConfResponse, ErrorBody, Secret};
use reqwest::StatusCode;

use crate::config::Config;
use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Outcome of a fetch.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Tree(ConfResponse),
}

/// Talks to the leader for this follower.
#[derive(Clone)]
pub struct LeaderClient {
    http: reqwest::Client,
    conf_url: String,
    report_url: String,
    key: Secret,
}

impl LeaderClient {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let tls = pryv_daemon::client_tls(config.ca_file.as_deref()).map_err(Error::Tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("config-follower/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        Ok(Self {
            http,
            conf_url: format!("{}/conf", config.leader_url),
            report_url: format!("{}/conf/report", config.leader_url),
            key: config.key.clone(),
        })
    }

    /// `GET /conf`, conditional on `revision` when given.
    pub async fn fetch(&self, revision: Option<&str>) -> Result<Fetched, Error> {
        let request = self
            .http
            .get(&self.conf_url)
            .header("authorization", self.key.expose());
        self.conditional(request, revision).await
    }

    /// `GET /conf?wait=<seen>&timeout=<s>`: the leader answers once its tree for this follower is no longer
    /// `seen` (or 304 at the timeout).
    pub async fn wait_for_change(&self, seen: &str, timeout: Duration) -> Result<Fetched, Error> {
        let request = self
            .http
            .get(&self.conf_url)
            .query(&[("wait", seen), ("timeout", &timeout.as_secs().to_string())])
            .timeout(timeout + REQUEST_TIMEOUT)
            .header("authorization", self.key.expose());
        self.conditional(request, Some(seen)).await
    }

    /// `POST /conf/report`: how the last apply ended.
    pub async fn report(&self, report: &pryv_protocol::ApplyReport) -> Result<(), Error> {
        let response = self
            .http
            .post(&self.report_url)
            .header("authorization", self.key.expose())
            .json(report)
            .send()
            .await
            .map_err(|err| Error::Leader(describe(&err)))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(Error::Leader(format!("{} answered {s}", self.report_url))),
        }
    }

    async fn conditional(
        &self,
        mut request: reqwest::RequestBuilder,
        revision: Option<&str>,
    ) -> Result<Fetched, Error> {
        if let Some(revision) = revision {
            request = request.header("if-none-match", format!("\"{revision}\""));
        }
        let response = request
            .send()
            .await
            .map_err(|err| Error::Leader(describe(&err)))?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned());
        match status {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            s if s.is_success() => {
                let mut body: ConfResponse = response
                    .json()
                    .await
                    .map_err(|err| Error::Leader(format!("unreadable answer from {}: {err}", self.conf_url)))?;
                if body.revision.is_none() {
                    body.revision = etag;
                }
                Ok(Fetched::Tree(body))
            }
            StatusCode::UNAUTHORIZED => Err(Error::Leader(
                "the leader refused this follower's key (401); check leader.auth against the leader's followers".into(),
            )),
            s => {
                let message = response
                    .json::<ErrorBody>()
                    .await
                    .map(|b| b.error.message)
                    .unwrap_or_else(|_| "no details".into());
                Err(Error::Leader(format!("{} answered {s}: {message}", self.conf_url)))
            }
        }
    }
}

/// reqwest's error plus its causes (the root cause says "connection refused", "certificate unknown", ...).
fn describe(err: &reqwest::Error) -> String {
    pryv_daemon::error_chain(err)
}
