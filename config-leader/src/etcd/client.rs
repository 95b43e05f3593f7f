//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, ...), on the
//! leader's one HTTP stack (reqwest + rustls): no gRPC, no generated code, no system protoc to build it.
//!
//! Keys and values travel base64-encoded, 64-bit numbers as strings, as the gateway's JSON mapping has them.
//! Every call goes to the endpoint that answered last and moves on to the next after a connection error, a
//! timeout or a 5xx, so one etcd member down costs one retry, not an outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;

/// How long one request to one endpoint may take: a member that does not answer in this time is skipped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// A comparison of a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key holds exactly these bytes.
    ValueIs(String, Vec<u8>),
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// A put that etcd deletes when `lease` expires.
    PutLeased {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
    /// Every key from `key` (included) to `end` (excluded).
    DeleteRange {
        key: String,
        end: String,
    },
}

/// The client: endpoints, the one that answered last, the prefix every key of the platform lives under.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    prefix: String,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    create_revision: Option<String>,
    #[serde(default)]
    mod_revision: Option<String>,
}

impl RawKv {
    fn decode(self) -> Result<Kv, Error> {
        let bytes = |text: &str| {
            B64.decode(text)
                .map_err(|err| Error::Etcd(format!("undecodable answer: {err}")))
        };
        let key = String::from_utf8(bytes(&self.key)?)
            .map_err(|_| Error::Etcd("a key that is not UTF-8".into()))?;
        Ok(Kv {
            key,
            value: bytes(&self.value)?,
            create_revision: number(self.create_revision.as_deref()),
            mod_revision: number(self.mod_revision.as_deref()),
        })
    }
}

/// A 64-bit number as the gateway writes it (a string; absent = 0).
pub fn number(text: Option<&str>) -> i64 {
    text.and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// The revision in an answer's header.
fn header_revision(answer: &Value) -> i64 {
    number(answer["header"]["revision"].as_str())
}

fn decode_kvs(answer: &Value) -> Result<Vec<Kv>, Error> {
    match answer.get("kvs") {
        None => Ok(Vec::new()),
        Some(kvs) => serde_json::from_value::<Vec<RawKv>>(kvs.clone())
            .map_err(|err| Error::Etcd(format!("unexpected answer: {err}")))?
            .into_iter()
            .map(RawKv::decode)
            .collect(),
    }
}

/// The end of the range of every key starting with `prefix` (etcd's prefix convention).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Etcd {
    pub fn new(
        endpoints: Vec<String>,
        prefix: String,
        tls: rustls::ClientConfig,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        Ok(Self {
            http,
            endpoints,
            current: AtomicUsize::new(0),
            prefix,
        })
    }

    /// `name` under the platform's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Posts `body` to `path`, on the endpoint that answered last, then on each other in turn after a
    /// connection error, a timeout or a 5xx: the first 2xx answer (a stream, with no `timeout`) and its
    /// endpoint. A 4xx is etcd refusing the request itself: no other member would take it.
    async fn send(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<(String, reqwest::Response), Error> {
        let count = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for step in 0..count {
            let index = (first + step) % count;
            let endpoint = &self.endpoints[index];
            let mut request = self.http.post(format!("{endpoint}{path}")).json(body);
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match request.send().await {
                Ok(answer) if answer.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), answer));
                }
                Ok(answer) if answer.status().is_client_error() => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    return Err(Error::Etcd(format!("{endpoint}{path}: {status}: {text}")));
                }
                Ok(answer) => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    failures.push(format!("{endpoint}: {status} {}", text.trim()));
                }
                Err(err) => {
                    failures.push(format!("{endpoint}: {}", pryv_daemon::error_chain(&err)))
                }
            }
        }
        Err(Error::Etcd(format!(
            "no etcd member answered ({})",
            failures.join("; ")
        )))
    }

    /// [`Etcd::send`] within [`REQUEST_TIMEOUT`], its JSON answer.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let (endpoint, answer) = self.send(path, body, Some(REQUEST_TIMEOUT)).await?;
        answer
            .json()
            .await
            .map_err(|err| Error::Etcd(format!("{endpoint}: unreadable answer: {err}")))
    }

    /// One key (a linearizable read: it needs a quorum).
    pub async fn get(&self, name: &str) -> Result<Option<Kv>, Error> {
        let answer = self
            .post("/v3/kv/range", &json!({"key": B64.encode(self.key(name))}))
            .await?;
        Ok(decode_kvs(&answer)?.into_iter().next())
    }

    /// A range read of every key under `name` (a prefix), with the further fields of `options` (limit,
    /// sort, keys only, count only).
    async fn range_under(&self, name: &str, options: Value) -> Result<Value, Error> {
        let prefix = self.key(name);
        let mut body =
            json!({"key": B64.encode(&prefix), "range_end": B64.encode(prefix_end(&prefix))});
        if let (Some(body), Value::Object(options)) = (body.as_object_mut(), options) {
            body.extend(options);
        }
        self.post("/v3/kv/range", &body).await
    }

    /// Every key under `name` (a prefix), in key order, and the store revision they were read at.
    pub async fn list(&self, name: &str) -> Result<(Vec<Kv>, i64), Error> {
        let answer = self.range_under(name, json!({})).await?;
        Ok((decode_kvs(&answer)?, header_revision(&answer)))
    }

    /// The `limit` last keys under `name`, last first (with `oldest`: the first ones, first first).
    pub async fn ends(&self, name: &str, limit: usize, oldest: bool) -> Result<Vec<Kv>, Error> {
        let order = if oldest { "ASCEND" } else { "DESCEND" };
        let answer = self
            .range_under(
                name,
                json!({"limit": limit, "sort_order": order, "sort_target": "KEY"}),
            )
            .await?;
        decode_kvs(&answer)
    }

    /// The store revision of the newest change of a key under `name` (0 when there is none).
    pub async fn newest_change(&self, name: &str) -> Result<i64, Error> {
        let options =
            json!({"limit": 1, "sort_order": "DESCEND", "sort_target": "MOD", "keys_only": true});
        let answer = self.range_under(name, options).await?;
        Ok(decode_kvs(&answer)?.first().map_or(0, |kv| kv.mod_revision))
    }

    /// How many keys are under `name`.
    pub async fn count(&self, name: &str) -> Result<i64, Error> {
        let answer = self.range_under(name, json!({"count_only": true})).await?;
        Ok(number(answer["count"].as_str()))
    }

    /// The last key under `name` in key order (the newest of zero-padded numbered keys).
    pub async fn last(&self, name: &str) -> Result<Option<Kv>, Error> {
        Ok(self.ends(name, 1, false).await?.into_iter().next())
    }

    /// The current store revision: proof that a quorum of members answers.
    pub async fn revision(&self) -> Result<i64, Error> {
        let answer = self
            .post(
                "/v3/kv/range",
                &json!({"key": B64.encode(self.key("")), "count_only": true}),
            )
            .await?;
        Ok(header_revision(&answer))
    }

    /// All of `ops` if every comparison holds, nothing otherwise: whether they were applied.
    pub async fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<bool, Error> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(name) => json!({
                    "key": B64.encode(self.key(name)),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0",
                }),
                Compare::ValueIs(name, value) => json!({
                    "key": B64.encode(self.key(name)),
                    "target": "VALUE",
                    "result": "EQUAL",
                    "value": B64.encode(value),
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => json!({"request_put": {
                    "key": B64.encode(self.key(key)),
                    "value": B64.encode(value),
                }}),
                Op::PutLeased { key, value, lease } => json!({"request_put": {
                    "key": B64.encode(self.key(key)),
                    "value": B64.encode(value),
                    "lease": lease.to_string(),
                }}),
                Op::Delete { key } => json!({"request_delete_range": {
                    "key": B64.encode(self.key(key)),
                }}),
                Op::DeleteRange { key, end } => json!({"request_delete_range": {
                    "key": B64.encode(self.key(key)),
                    "range_end": B64.encode(self.key(end)),
                }}),
            })
            .collect();
        let answer = self
            .post(
                "/v3/kv/txn",
                &json!({"compare": compare, "success": success}),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    /// A lease of `seconds` (etcd may grant more: its minimum): keys put with it vanish when it ends. Its id
    /// and the seconds granted.
    pub async fn grant_for(&self, seconds: i64) -> Result<(i64, i64), Error> {
        let answer = self
            .post("/v3/lease/grant", &json!({"TTL": seconds.to_string()}))
            .await?;
        match number(answer["ID"].as_str()) {
            0 => Err(Error::Etcd(format!("no lease granted: {answer}"))),
            id => Ok((id, number(answer["TTL"].as_str()).max(seconds))),
        }
    }

    /// [`Etcd::grant_for`], the id only.
    pub async fn grant(&self, seconds: i64) -> Result<i64, Error> {
        Ok(self.grant_for(seconds).await?.0)
    }

    /// Refreshes lease `id`: the seconds it has left (0: it expired, its keys are gone).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, Error> {
        // The gateway streams keep-alive answers; one request gets one answer, the first line.
        let answer = self
            .post_first_line("/v3/lease/keepalive", &json!({"ID": id.to_string()}))
            .await?;
        Ok(number(answer["result"]["TTL"].as_str()))
    }

    /// Posts to a streaming endpoint and reads its first message only.
    async fn post_first_line(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let (endpoint, answer) = self.send(path, body, Some(REQUEST_TIMEOUT)).await?;
        let mut stream = WatchStream {
            answer,
            buffer: Vec::new(),
        };
        let line = tokio::time::timeout(REQUEST_TIMEOUT, stream.line())
            .await
            .map_err(|_| Error::Etcd(format!("{endpoint}{path}: no answer in time")))??;
        serde_json::from_slice(&line)
            .map_err(|err| Error::Etcd(format!("{endpoint}: unreadable answer: {err}")))
    }

    /// Puts `value` at `name` unless the key exists; the value in force either way (create-if-absent).
    pub async fn create_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
        let created = self
            .txn(
                &[Compare::Absent(name.to_owned())],
                &[Op::Put {
                    key: name.to_owned(),
                    value: value.to_vec(),
                }],
            )
            .await?;
        if created {
            return Ok(value.to_vec());
        }
        self.get(name)
            .await?
            .map(|kv| kv.value)
            .ok_or_else(|| Error::Etcd(format!("{} vanished after it was found", self.key(name))))
    }

    /// Watches every key under `name` from store revision `from`: the stream of events, read chunk by chunk.
    pub async fn watch(&self, name: &str, from: i64) -> Result<WatchStream, Error> {
        let prefix = self.key(name);
        let body = json!({"create_request": {
            "key": B64.encode(&prefix),
            "range_end": B64.encode(prefix_end(&prefix)),
            "start_revision": from.to_string(),
        }});
        // No overall timeout: the answer is a stream that lasts as long as the watch.
        let (_, answer) = self.send("/v3/watch", &body, None).await?;
        Ok(WatchStream {
            answer,
            buffer: Vec::new(),
        })
    }
}

/// What one message of a watch says.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// Keys changed; the store revision of the message.
    Changed { revision: i64, keys: Vec<String> },
    /// The watch started (or a progress note) at this revision.
    Progress(i64),
    /// The revision asked for was compacted away: read everything again and watch from the new revision.
    Compacted(i64),
}

/// The open stream of a watch (newline-delimited JSON messages).
pub struct WatchStream {
    answer: reqwest::Response,
    buffer: Vec<u8>,
}

impl WatchStream {
    /// The next message; an error when the stream ended or broke (the caller watches again).
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        let line = self.line().await?;
        parse_watch_message(&line)
    }

    /// The next non-empty line of the stream.
    async fn line(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(line);
            }
            match self.answer.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Err(Error::Etcd("the watch stream ended".into())),
                Err(err) => {
                    return Err(Error::Etcd(format!(
                        "the watch stream broke: {}",
                        pryv_daemon::error_chain(&err)
                    )));
                }
            }
        }
    }
}

fn parse_watch_message(line: &[u8]) -> Result<WatchEvent, Error> {
    let message: Value = serde_json::from_slice(line)
        .map_err(|err| Error::Etcd(format!("unreadable watch message: {err}")))?;
    if let Some(error) = message.get("error") {
        return Err(Error::Etcd(format!("watch: {error}")));
    }
    let result = &message["result"];
    let compacted = number(result["compact_revision"].as_str());
    if compacted > 0 {
        return Ok(WatchEvent::Compacted(compacted));
    }
    if result["canceled"].as_bool() == Some(true) {
        return Err(Error::Etcd(format!(
            "the watch was cancelled: {}",
            result["cancel_reason"]
                .as_str()
                .unwrap_or("no reason given")
        )));
    }
    let revision = header_revision(result);
    let Some(events) = result.get("events").and_then(Value::as_array) else {
        return Ok(WatchEvent::Progress(revision));
    };
    let mut keys = Vec::new();
    for event in events {
        let raw: RawKv = serde_json::from_value(event["kv"].clone())
            .map_err(|err| Error::Etcd(format!("unreadable watch event: {err}")))?;
        keys.push(raw.decode()?.key);
    }
    Ok(WatchEvent::Changed { revision, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_byte() {
        assert_eq!(prefix_end("/pryv/"), b"/pryv0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn watch_messages_are_read_as_the_gateway_writes_them() {
        let key = B64.encode("/pryv/settings/history/000000000002");
        let line = format!(
            r#"{{"result":{{"header":{{"revision":"17"}},"events":[{{"kv":{{"key":"{key}","value":"","mod_revision":"17"}}}}]}}}}"#
        );
        assert_eq!(
            parse_watch_message(line.as_bytes()).unwrap(),
            WatchEvent::Changed {
                revision: 17,
                keys: vec!["/pryv/settings/history/000000000002".into()]
            }
        );
        let created = br#"{"result":{"header":{"revision":"9"},"created":true}}"#;
        assert_eq!(
            parse_watch_message(created).unwrap(),
            WatchEvent::Progress(9)
        );
        let compacted =
            br#"{"result":{"header":{"revision":"30"},"compact_revision":"12","canceled":true}}"#;
        assert_eq!(
            parse_watch_message(compacted).unwrap(),
            WatchEvent::Compacted(12)
        );
        assert!(parse_watch_message(br#"{"error":{"message":"boom"}}"#).is_err());
    }
}
