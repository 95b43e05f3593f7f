//! The HTTP client to the leader: one shared `reqwest::Client` (rustls with ring; system roots plus an
//! optional private CA), connect and request timeouts, `If-None-Match` with the last revision. With several
//! leaders (`leader.url` + `leader.urls`, replicas of one platform) it sticks to the last one that answered and
//! moves on to the next after a connection error, a timeout or a 502/503/504 — never after a 401 or another
//! 4xx, which another replica would answer the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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
    /// The tree and the settings revision it was rendered from, when the leader says it.
    Tree(ConfResponse, Option<i64>),
}

/// Talks to the leader for this follower.
#[derive(Clone)]
pub struct LeaderClient {
    http: reqwest::Client,
    /// Base URLs, in configuration order.
    leaders: Arc<[String]>,
    /// The leader that answered last: tried first.
    current: Arc<AtomicUsize>,
    key: Secret,
    /// The highest settings revision this machine applied: a leader serving an older one is behind (a
    /// replica that missed changes) and another is tried.
    floor: Arc<AtomicI64>,
    /// The highest settings revision a leader said is in force (a notification): until a leader answers
    /// with at least that one, even a 304 is from a replica that has not caught up.
    required: Arc<AtomicI64>,
    /// The revision the last notification named, until this machine has it: a 304 for another revision
    /// then comes from a replica that still holds this machine back (a rollout's wave it has not learnt of).
    wanted: Arc<std::sync::Mutex<Option<String>>>,
}

/// Answers after which another leader is tried: the leader (or the proxy before it) is not serving.
fn unavailable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A fraction in [0, 1) that differs between processes and calls (no shared rhythm across followers).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // The top 53 bits, as a float in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

impl LeaderClient {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let leaders: Vec<String> = if config.leader_urls.is_empty() {
            vec![config.leader_url.clone()]
        } else {
            config.leader_urls.clone()
        };
        Self::to_leaders(leaders, config.key.clone(), config.ca_file.as_deref())
    }

    /// A client of `leaders` (at least one), tried in this order.
    pub fn to_leaders(
        leaders: Vec<String>,
        key: Secret,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        if leaders.is_empty() {
            return Err(Error::Internal("no leader URL".into()));
        }
        let tls = pryv_daemon::client_tls(ca_file).map_err(Error::Tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("config-follower/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        Ok(Self {
            http,
            leaders: leaders.into(),
            current: Arc::new(AtomicUsize::new(0)),
            key,
            floor: Arc::new(AtomicI64::new(0)),
            required: Arc::new(AtomicI64::new(0)),
            wanted: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// A leader notified this machine to fetch `revision` (`revision` of a notification): for the sync it
    /// starts, a 304 for another revision makes the follower ask the next replica. With one leader there is
    /// nobody else to ask: nothing changes.
    pub fn want(&self, revision: Option<&str>) {
        if self.leaders.len() > 1 {
            *self.wanted() = revision.map(str::to_owned);
        }
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An answer was taken: a tree (whatever its revision, the leader had news), or a 304 for the wanted one.
    fn took(&self, fetched: &Result<Fetched, Error>, sent: Option<&str>) {
        let mut wanted = self.wanted();
        match fetched {
            Ok(Fetched::Tree(..)) => *wanted = None,
            Ok(Fetched::NotModified) if wanted.as_deref() == sent => *wanted = None,
            _ => {}
        }
    }

    /// A leader said settings revision `revision` is in force (`storeRevision` of a notification).
    pub fn require(&self, revision: Option<i64>) {
        if let Some(revision) = revision {
            self.required.fetch_max(revision, Ordering::Relaxed);
        }
    }

    /// The highest settings revision this machine applied (0: none known).
    pub fn floor(&self) -> i64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// This machine applied a tree of settings revision `revision`: trees of older ones are refused.
    pub fn raise_floor(&self, revision: i64) {
        self.floor.fetch_max(revision, Ordering::Relaxed);
    }

    /// Why a `GET /conf` answer must not be taken: a tree of an older settings revision than applied here,
    /// or any answer of an older one than a notification said is in force.
    fn behind(&self, response: &reqwest::Response, sent: Option<&str>) -> Option<String> {
        if response.status() == StatusCode::NOT_MODIFIED
            && let Some(wanted) = self.wanted().as_deref()
            && sent != Some(wanted)
        {
            return Some(format!(
                "answers 304 for revision {} although a leader notified revision {wanted} (a replica that has not caught up yet)",
                sent.unwrap_or("-")
            ));
        }
        let (floor, required) = (self.floor(), self.required.load(Ordering::Relaxed));
        let served = store_revision(response)?;
        if response.status().is_success() && served < floor {
            return Some(format!(
                "serves settings revision {served}, older than revision {floor} this machine applied (a replica that missed changes)"
            ));
        }
        let answered =
            response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
        (answered && served < required).then(|| {
            format!(
                "answers for settings revision {served}, older than revision {required} a leader notified (a replica that has not caught up yet)"
            )
        })
    }

    /// The leader tried first now (the last that answered).
    pub fn current_leader(&self) -> &str {
        &self.leaders[self.current.load(Ordering::Relaxed) % self.leaders.len()]
    }

    /// Sends the request `build` makes for a leader's base URL: to the current leader, then to each other in
    /// turn while they cannot be reached or answer 502/503/504. The last leader's answer (or error) is the
    /// caller's; the leader that answered becomes the current one.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        refuse: impl Fn(&reqwest::Response) -> Option<String>,
    ) -> Result<(String, reqwest::Response), Error> {
        let count = self.leaders.len();
        let start = self.current.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for step in 0..count {
            let index = (start + step) % count;
            let base = &self.leaders[index];
            let last = step + 1 == count;
            match build(base).send().await {
                // Never taken, from any leader: another one may have what this machine needs.
                Ok(response) if let Some(reason) = refuse(&response) => {
                    failures.push(format!("{base} {reason}"));
                    if last {
                        return Err(Error::Leader(failures.join("; ")));
                    }
                }
                // One leader, or the last after others failed: its own answer explains it.
                Ok(response)
                    if !unavailable(response.status()) || (last && failures.is_empty()) =>
                {
                    if index != start {
                        tracing::warn!(from = %self.leaders[start], to = %base, failures = %failures.join("; "), "the leader did not answer; switched to another one");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok((base.clone(), response));
                }
                Ok(response) => {
                    failures.push(format!("{base} answered {}", response.status()));
                    if last {
                        return Err(Error::Leader(failures.join("; ")));
                    }
                }
                Err(err) if last => {
                    failures.push(format!("{base}: {}", describe(&err)));
                    return Err(Error::Leader(failures.join("; ")));
                }
                Err(err) => failures.push(format!("{base}: {}", describe(&err))),
            }
        }
        Err(Error::Leader(failures.join("; ")))
    }

    /// `GET /conf`, conditional on `revision` when given.
    pub async fn fetch(&self, revision: Option<&str>) -> Result<Fetched, Error> {
        let key = self.key.expose();
        let sent = self
            .send(
                |base| {
                    conditional(
                        self.http
                            .get(format!("{base}/conf"))
                            .header("authorization", key),
                        revision,
                    )
                },
                |response| self.behind(response, revision),
            )
            .await?;
        let fetched = read_conf(sent).await;
        self.took(&fetched, revision);
        fetched
    }

    /// `GET /conf?wait=<seen>&timeout=<s>`: the leader answers once its tree for this follower is no longer
    /// `seen` (or 304 at the timeout). The wait is shortened by up to a fifth at random, so followers started
    /// together (or moved together to another leader) do not poll in step.
    pub async fn wait_for_change(&self, seen: &str, timeout: Duration) -> Result<Fetched, Error> {
        let timeout = timeout
            .mul_f64(1.0 - 0.2 * jitter())
            .max(Duration::from_secs(1));
        let seconds = timeout.as_secs().to_string();
        let key = self.key.expose();
        let sent = self
            .send(
                |base| {
                    conditional(
                        self.http
                            .get(format!("{base}/conf"))
                            .query(&[("wait", seen), ("timeout", seconds.as_str())])
                            .timeout(timeout + REQUEST_TIMEOUT)
                            .header("authorization", key),
                        Some(seen),
                    )
                },
                |response| self.behind(response, Some(seen)),
            )
            .await?;
        let fetched = read_conf(sent).await;
        self.took(&fetched, Some(seen));
        fetched
    }

    /// `POST /conf/report`: how the last apply ended.
    pub async fn report(&self, report: &pryv_protocol::ApplyReport) -> Result<(), Error> {
        let key = self.key.expose();
        let (base, response) = self
            .send(
                |base| {
                    self.http
                        .post(format!("{base}/conf/report"))
                        .header("authorization", key)
                        .json(report)
                },
                |_| None,
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(Error::Leader(format!("{base}/conf/report answered {s}"))),
        }
    }
}

fn conditional(
    request: reqwest::RequestBuilder,
    revision: Option<&str>,
) -> reqwest::RequestBuilder {
    match revision {
        Some(revision) => request.header("if-none-match", format!("\"{revision}\"")),
        None => request,
    }
}

/// The settings revision a leader says its answer is of.
fn store_revision(response: &reqwest::Response) -> Option<i64> {
    response
        .headers()
        .get(pryv_protocol::STORE_REVISION_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A `GET /conf` answer: the tree, 304, or what the leader said was wrong.
async fn read_conf((base, response): (String, reqwest::Response)) -> Result<Fetched, Error> {
    let conf_url = format!("{base}/conf");
    let status = response.status();
    let store = store_revision(&response);
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
                .map_err(|err| Error::Leader(format!("unreadable answer from {conf_url}: {err}")))?;
            if body.revision.is_none() {
                body.revision = etag;
            }
            Ok(Fetched::Tree(body, store))
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
            Err(Error::Leader(format!("{conf_url} answered {s}: {message}")))
        }
    }
}

/// reqwest's error plus its causes (the root cause says "connection refused", "certificate unknown", ...).
fn describe(err: &reqwest::Error) -> String {
    pryv_daemon::error_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    /// A leader on loopback answering `GET /conf` with `status` (a tree for 200), counting its requests.
    async fn leader(status: u16) -> (String, Arc<AtomicUsize>) {
        leader_at(status, None).await
    }

    /// [`leader`], saying its trees are of settings revision `store` when given.
    async fn leader_at(status: u16, store: Option<i64>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/conf",
            axum::routing::get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let code = StatusCode::from_u16(status).unwrap();
                    let body = if status == 200 {
                        serde_json::json!({"files": [], "revision": "r1"})
                    } else {
                        serde_json::json!({"error": {"id": "x", "message": "refused here"}})
                    };
                    let mut answer = (code, axum::Json(body)).into_response();
                    if let Some(store) = store {
                        answer.headers_mut().insert(
                            pryv_protocol::STORE_REVISION_HEADER,
                            store.to_string().parse().unwrap(),
                        );
                    }
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), hits)
    }

    /// A loopback URL where nothing listens.
    fn nobody() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    fn client(leaders: &[&str]) -> LeaderClient {
        LeaderClient::to_leaders(
            leaders.iter().map(|l| (*l).to_owned()).collect(),
            Secret::new("key"),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn moves_on_after_an_unreachable_or_unavailable_leader_and_sticks_to_the_one_that_answered()
     {
        let (busy, busy_hits) = leader(503).await;
        let (good, good_hits) = leader(200).await;
        let dead = nobody();
        let followers = client(&[&dead, &busy, &good]);
        assert!(matches!(
            followers.fetch(None).await.unwrap(),
            Fetched::Tree(..)
        ));
        assert_eq!(followers.current_leader(), good);
        assert_eq!(busy_hits.load(Ordering::SeqCst), 1);
        // The next fetch goes straight to the leader that answered.
        followers.fetch(None).await.unwrap();
        assert_eq!(good_hits.load(Ordering::SeqCst), 2);
        assert_eq!(busy_hits.load(Ordering::SeqCst), 1);
        // Every leader down: the error names each.
        let all_down = client(&[&dead, &busy]);
        let err = all_down.fetch(None).await.unwrap_err().to_string();
        assert!(err.contains(&dead) && err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn a_refusal_is_not_a_reason_to_try_another_leader() {
        for refusal in [401, 404, 400] {
            let (refusing, _) = leader(refusal).await;
            let (good, good_hits) = leader(200).await;
            let err = client(&[&refusing, &good]).fetch(None).await.unwrap_err();
            assert!(
                err.to_string().contains(&refusal.to_string()) || refusal == 401,
                "{err}"
            );
            assert_eq!(good_hits.load(Ordering::SeqCst), 0, "{refusal} moved on");
        }
    }

    #[tokio::test]
    async fn a_leader_behind_what_this_machine_applied_is_passed_over() {
        let (lagging, lagging_hits) = leader_at(200, Some(3)).await;
        let (current, _) = leader_at(200, Some(7)).await;
        let followers = client(&[&lagging, &current]);
        // Nothing applied yet: any tree is taken, and it names its settings revision.
        assert!(matches!(
            followers.fetch(None).await.unwrap(),
            Fetched::Tree(_, Some(3))
        ));
        followers.raise_floor(5);
        assert!(matches!(
            followers.fetch(None).await.unwrap(),
            Fetched::Tree(_, Some(7))
        ));
        assert_eq!(followers.current_leader(), current);
        assert_eq!(lagging_hits.load(Ordering::SeqCst), 2);
        // Only lagging leaders: refused, never taken, and the error says why.
        let only_lagging = client(&[&lagging]);
        only_lagging.raise_floor(5);
        let err = only_lagging.fetch(None).await.unwrap_err().to_string();
        assert!(err.contains("older than revision 5"), "{err}");
        // A leader that says nothing (an older leader) is taken as before.
        let (silent, _) = leader(200).await;
        let legacy = client(&[&silent]);
        legacy.raise_floor(5);
        assert!(matches!(
            legacy.fetch(None).await.unwrap(),
            Fetched::Tree(_, None)
        ));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
