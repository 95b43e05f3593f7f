//! `config-leader.json`: the Pryv-compatible raw model, overrides from the environment and flags, and validation
//! into a [`Config`] that cannot hold a bad state. Every problem is collected and reported at once.
//!
//! `"SECRET"` values of `internals` and `adminKey` are replaced by generated secrets and written back to the file
//! (atomically, the rest of the file kept) so they stay the same across restarts.
// Blocking: the configuration is read and its SECRETs written back at start-up, before the runtime serves.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use pryv_render::SECRET_PLACEHOLDER;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::secret::{self, Secret};

/// Port of the legacy leader.
pub const DEFAULT_PORT: u16 = pryv_protocol::follower_file::LEADER_DEFAULT_PORT;
const DEFAULT_IP: &str = "0.0.0.0";
const DEFAULT_NOTIFY_TIMEOUT_S: f64 = 10.0;
const DEFAULT_NOTIFY_CONCURRENCY: usize = 64;

/// Keys of the legacy file the leader accepts without using them (or not yet).
/// Where the core answers on a single-node machine (its compose service name and port).
const DEFAULT_SINGLE_NODE_CORE_URL: &str = "http://core:3000";
const ACCEPTED_KEYS: &[&str] = &["logs"];
/// How often a followed settings branch is fetched, by default.
const DEFAULT_GIT_POLL_S: u64 = 30;

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub templates_path: Option<PathBuf>,
    pub platform_config: Option<PathBuf>,
    pub database_path: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (secrets are written back there).
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// Connections open at once (followers waiting on `GET /conf?wait=` each hold one), bounded by the
    /// process's file-descriptor limit.
    pub max_connections: usize,
    /// One sub-folder per role.
    pub templates_path: PathBuf,
    /// Folders outside the templates that a symlink in them may lead to (`templates.allowLinksTo`).
    pub allow_links_to: Vec<PathBuf>,
    pub platform_config: PathBuf,
    pub platform_template: Option<PathBuf>,
    pub database_path: PathBuf,
    pub credentials_file: PathBuf,
    pub internals: Internals,
    pub followers: Vec<FollowerEntry>,
    pub admin_key: Option<Secret>,
    pub tls: Option<TlsFiles>,
    /// Per-follower limit of one notification.
    pub notify_timeout: std::time::Duration,
    /// Notifications in flight at once.
    pub notify_concurrency: usize,
    /// Extra CA for `https://` follower URLs.
    pub notify_ca_file: Option<PathBuf>,
    /// Bearer token required on `GET /metrics` (`None` = open, like most exporters).
    pub metrics_token: Option<String>,
    /// Origins allowed to call the admin routes from a browser; `None` = `https://adm.<DOMAIN>`.
    pub cors_origins: Option<Vec<String>>,
    /// The register's base URL (legacy `registerUrl`), for the platform-users routes.
    pub register_url: Option<String>,
    /// Core API URLs for the platform-users routes; `None` = the URLs of the followers of role `core`.
    pub core_urls: Option<Vec<String>>,
    /// The core's URL on a single-node machine (followers of role `singlenode`).
    pub single_node_core_url: String,
    pub platform_users_timeout: std::time::Duration,
    /// Top-level keys nobody knows; warned about once at start.
    pub unknown_keys: Vec<String>,
    /// The settings history in git (`gitRepoPath`, `settings.git`), when set.
    pub git: Option<GitSettings>,
    /// `store.etcd`: the leader is one replica of several sharing an etcd cluster; `None` = SQLite.
    pub etcd: Option<EtcdStore>,
}

/// `store.etcd`: the etcd cluster the replicas share.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    /// `http://host:2379` or `https://...`, every member (any order).
    pub endpoints: Vec<String>,
    /// Every key of the platform starts with it (`/pryv/`): several platforms can share a cluster.
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when the members require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// How long without a quorum answer before the replica calls itself isolated (refuses writes).
    pub isolated_after: std::time::Duration,
    /// The election lease: how long the replica driving rollouts may be gone before another takes over.
    pub lease: std::time::Duration,
    /// Audit entries kept in etcd (the elected replica deletes older ones).
    pub keep_audit_entries: usize,
}

/// Default of `store.etcd.leaseSeconds`.
const DEFAULT_LEASE_S: u64 = 10;
/// Default of `store.etcd.isolatedAfterSeconds`.
const DEFAULT_ISOLATED_AFTER_S: f64 = 3.0;

impl Config {
    /// The `platform.yml` the leader renders and edits: the file itself, or in etcd mode this replica's copy
    /// of the store's current settings (in the database folder, written only by the leader).
    pub fn platform_in_force(&self) -> PathBuf {
        match &self.etcd {
            Some(_) => self.database_path.join("replica").join("platform.yml"),
            None => self.platform_config.clone(),
        }
    }
}

/// Where the settings history is committed, and the branch followed.
#[derive(Debug, Clone)]
pub struct GitSettings {
    /// The repository's folder: the one holding `platform.yml`.
    pub repo: PathBuf,
    /// `settings.git`: a branch of a remote whose commits become revisions, and where saves are pushed.
    pub follow: Option<GitFollow>,
    /// `gitRepoPath` as written when it names another folder (a legacy file moved to another layout): warned
    /// about; the repository is still the folder holding platform.yml.
    pub named_elsewhere: Option<PathBuf>,
}

/// `settings.git: {remote, branch, pollSeconds}`.
#[derive(Debug, Clone)]
pub struct GitFollow {
    /// A path, `ssh://`, `git@host:path` or `https://` URL, as `git` takes it.
    pub remote: String,
    pub branch: String,
    pub poll: std::time::Duration,
}

/// Internal variables (secrets). `Debug` lists names only.
#[derive(Clone, Default)]
pub struct Internals(pub IndexMap<String, Value>);

impl std::fmt::Debug for Internals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// One follower machine.
#[derive(Debug, Clone)]
pub struct FollowerEntry {
    pub key: Secret,
    pub url: String,
    pub role: String,
    /// Machine name (`core-1`), when `init` wrote one.
    pub name: Option<String>,
    /// Its zone (`zones.<zone>` of platform.yml), if any.
    pub zone: Option<String>,
    /// Its own overrides of settings (its hosting name...), winning over its zone's and the platform's.
    pub variables: std::collections::BTreeMap<String, Value>,
    /// What its tree depends on: the cache key of what it is served.
    pub variant: crate::variant::Variant,
}

impl FollowerEntry {
    /// A follower of `role` with neither zone nor variables.
    pub fn plain(key: &str, url: &str, role: &str, name: Option<&str>) -> Self {
        Self {
            key: Secret::new(key),
            url: url.to_owned(),
            role: role.to_owned(),
            name: name.map(str::to_owned),
            zone: None,
            variables: std::collections::BTreeMap::new(),
            variant: crate::variant::Variant::plain(role),
        }
    }

    /// How operators know it: its name, else its URL.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    http: RawHttp,
    templates_path: Option<String>,
    database_path: Option<String>,
    #[serde(default)]
    platform_settings: RawPlatformSettings,
    #[serde(default)]
    credentials: RawCredentials,
    #[serde(default)]
    internals: IndexMap<String, Value>,
    #[serde(default)]
    followers: IndexMap<String, RawFollower>,
    admin_key: Option<String>,
    tls: Option<RawTls>,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    metrics: RawMetrics,
    register_url: Option<String>,
    #[serde(default)]
    platform_users: RawPlatformUsers,
    git_repo_path: Option<String>,
    #[serde(default)]
    settings: RawSettings,
    store: Option<RawStore>,
    #[serde(flatten)]
    other: IndexMap<String, Value>,
}

/// `store`: where the leader keeps its state (absent = SQLite and files beside it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    etcd: Option<RawEtcd>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEtcd {
    #[serde(default)]
    endpoints: Vec<String>,
    prefix: Option<String>,
    tls: Option<RawEtcdTls>,
    isolated_after_seconds: Option<f64>,
    lease_seconds: Option<u64>,
    keep_audit_entries: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEtcdTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawSettings {
    git: Option<RawGit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGit {
    remote: Option<String>,
    branch: Option<String>,
    poll_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawMetrics {
    token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawTemplates {
    #[serde(default)]
    allow_links_to: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawCors {
    allowed_origins: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPlatformUsers {
    core_urls: Option<Vec<String>>,
    single_node_core_url: Option<String>,
    timeout_seconds: Option<f64>,
}

/// Default of `http.maxConnections`: room for a fleet of thousands long-polling at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawHttp {
    ip: Option<String>,
    port: Option<Value>,
    max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPlatformSettings {
    platform_config: Option<String>,
    platform_template: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawCredentials {
    file_path: Option<String>,
}

#[derive(Deserialize)]
struct RawFollower {
    url: Option<String>,
    role: Option<String>,
    name: Option<String>,
    zone: Option<String>,
    #[serde(default)]
    variables: std::collections::BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawNotify {
    timeout_seconds: Option<f64>,
    concurrency: Option<usize>,
    /// PEM CA trusted (besides the system's) for followers served over HTTPS with a private certificate.
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
}

impl Config {
    /// Reads, fills in generated secrets (persisting them), applies overrides and validates.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let mut json: Value = serde_json::from_str(&text).map_err(|err| Error::Config {
            path: path.to_owned(),
            problems: vec![format!(
                "not valid JSON: {err}; fix the syntax at that position"
            )],
        })?;
        // With etcd, a SECRET is generated once for every replica, in the store, at start (etcd::secrets).
        let shared = json.pointer("/store/etcd").is_some();
        if !shared && generate_secrets(&mut json) {
            persist(path, &json)?;
        }
        let (raw, problems) = read_sections(json).map_err(|problem| Error::Config {
            path: path.to_owned(),
            problems: vec![problem],
        })?;
        validate(path, raw, problems, overrides)
    }
}

/// The raw model, key by key: a key of the wrong shape is one problem (named) and is left out, so one mistake
/// never hides the others.
fn read_sections(json: Value) -> Result<(RawConfig, Vec<String>), String> {
    let Value::Object(mut object) = json else {
        return Err("the file must hold a JSON object".to_owned());
    };
    let mut problems = Vec::new();
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        let mut alone = serde_json::Map::new();
        if let Some(value) = object.get(&key) {
            alone.insert(key.clone(), value.clone());
        }
        if let Err(err) = serde_json::from_value::<RawConfig>(Value::Object(alone)) {
            problems.push(format!("{key}: {err}"));
            object.remove(&key);
        }
    }
    let raw = serde_json::from_value(Value::Object(object)).map_err(|err| err.to_string())?;
    Ok((raw, problems))
}

/// Replaces `"SECRET"` in `internals.*` and `adminKey`; true when anything changed.
fn generate_secrets(json: &mut Value) -> bool {
    let mut changed = false;
    if let Some(Value::Object(internals)) = json.get_mut("internals") {
        for value in internals.values_mut() {
            if value.as_str() == Some(SECRET_PLACEHOLDER) {
                *value = Value::String(secret::generate());
                changed = true;
            }
        }
    }
    if let Some(value) = json.get_mut("adminKey")
        && value.as_str() == Some(SECRET_PLACEHOLDER)
    {
        *value = Value::String(secret::generate());
        changed = true;
    }
    changed
}

fn persist(path: &Path, json: &Value) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(json).map_err(|err| Error::Config {
        path: path.to_owned(),
        problems: vec![err.to_string()],
    })?;
    text.push('\n');
    pryv_fs::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| Error::ConfigWrite {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), "generated secrets for SECRET placeholders and saved them");
    Ok(())
}

/// The checks of this file: the shared ones (paths, problems, listen address) and the overrides.
struct Checks<'a> {
    common: pryv_daemon::ConfigChecks,
    overrides: &'a Overrides,
}

impl Checks<'_> {
    fn resolve(&self, path: &str) -> PathBuf {
        self.common.resolve(path)
    }

    fn check_listen(&mut self, http: &RawHttp) -> Option<SocketAddr> {
        self.common.listen(
            (self.overrides.ip, self.overrides.port),
            (http.ip.as_deref(), http.port.as_ref()),
            (DEFAULT_IP, DEFAULT_PORT),
        )
    }

    /// (templates, platform.yml, template platform file, database folder, credentials file).
    fn check_paths(
        &mut self,
        raw: &RawConfig,
    ) -> (PathBuf, PathBuf, Option<PathBuf>, PathBuf, PathBuf) {
        let templates =
            self.overrides.templates_path.clone().unwrap_or_else(|| {
                self.resolve(raw.templates_path.as_deref().unwrap_or("../data"))
            });
        if !templates.is_dir() {
            self.common.problems.push(format!(
                "templatesPath: {} is not a folder; create it with one sub-folder per role, or point templatesPath at it",
                templates.display()
            ));
        }
        let platform = self.overrides.platform_config.clone().unwrap_or_else(|| {
            let name = raw.platform_settings.platform_config.as_deref();
            self.resolve(name.unwrap_or("platform.yml"))
        });
        let template = raw
            .platform_settings
            .platform_template
            .as_deref()
            .map(|p| self.resolve(p));
        let database =
            self.overrides.database_path.clone().unwrap_or_else(|| {
                self.resolve(raw.database_path.as_deref().unwrap_or("../database"))
            });
        let credentials = self.resolve(
            raw.credentials
                .file_path
                .as_deref()
                .unwrap_or("../credentials.txt"),
        );
        (templates, platform, template, database, credentials)
    }

    fn check_followers(&mut self, raw: IndexMap<String, RawFollower>) -> Vec<FollowerEntry> {
        let mut followers = Vec::with_capacity(raw.len());
        for (index, (key, follower)) in raw.into_iter().enumerate() {
            // Never print the key itself: name the follower by its position and URL.
            let url = follower.url.unwrap_or_default();
            let name = if url.is_empty() {
                format!("followers[{index}]")
            } else {
                format!("followers[{index}] ({url})")
            };
            if key.trim().is_empty() {
                self.common.problems.push(format!(
                    "{name}: the key is empty; give each follower a long random key"
                ));
            }
            if url.is_empty() {
                self.common.problems.push(format!(
                    "{name}: \"url\" is missing; set the follower's base URL"
                ));
            }
            match follower.role {
                Some(role) if !role.trim().is_empty() => {
                    if role.contains(['/', '\\']) || role == ".." || role == "." {
                        self.common.problems
                            .push(format!("{name}: role {role:?} must be a plain folder name"));
                    }
                    if let Some(zone) = &follower.zone
                        && !pryv_render::is_zone_name(zone)
                    {
                        self.common.problems.push(format!(
                            "{name}: zone {zone:?} must be letters, digits, '-' and '_' only"
                        ));
                    }
                    if follower.variables.keys().any(|v| v.trim().is_empty()) {
                        self.common.problems.push(format!(
                            "{name}: \"variables\" has an empty name; name each setting it overrides"
                        ));
                    }
                    let variant = crate::variant::Variant::new(
                        &role,
                        follower.zone.as_deref(),
                        follower.variables.clone(),
                    );
                    followers.push(FollowerEntry {
                        key: Secret::new(key),
                        url,
                        role,
                        name: follower.name,
                        zone: follower.zone,
                        variables: follower.variables,
                        variant,
                    });
                }
                _ => self.common.problems.push(format!(
                    "{name}: \"role\" is missing; set it to the follower's role (core, reg-master, reg-slave, static, singlenode)"
                )),
            }
        }
        followers
    }

    fn check_tls(&mut self, tls: Option<&RawTls>) -> Option<TlsFiles> {
        let cert = self.overrides.tls_cert_file.clone().or_else(|| {
            tls.and_then(|t| t.cert_file.as_deref())
                .map(|p| self.resolve(p))
        });
        let key = self.overrides.tls_key_file.clone().or_else(|| {
            tls.and_then(|t| t.key_file.as_deref())
                .map(|p| self.resolve(p))
        });
        match (cert, key) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            _ => {
                self.common
                    .problems
                    .push("tls: give both certFile and keyFile (PEM), or neither".to_owned());
                None
            }
        }
    }

    fn check_internals(&mut self, internals: &IndexMap<String, Value>) {
        for (name, _) in internals.iter().filter(|(_, v)| v.is_null()) {
            self.common.problems.push(format!(
                "internals.{name}: null is not a value; set it or \"SECRET\""
            ));
        }
    }

    /// `gitRepoPath` and `settings.git`: the repository is the folder holding platform.yml; a followed branch
    /// needs a remote and a sane poll interval.
    fn check_git(&mut self, raw: &RawConfig, platform: &Path) -> Option<GitSettings> {
        let follow = raw.settings.git.as_ref().map(|git| {
            let remote = git.remote.clone().unwrap_or_default();
            if remote.trim().is_empty() {
                self.common.problems.push(
                    "settings.git.remote: missing; give the repository to follow (a path, ssh or https URL)"
                        .to_owned(),
                );
            }
            let poll = git.poll_seconds.unwrap_or(DEFAULT_GIT_POLL_S);
            if !(1..=86_400).contains(&poll) {
                self.common.problems.push(format!(
                    "settings.git.pollSeconds: {poll} must be between 1 and 86400"
                ));
            }
            GitFollow {
                remote,
                branch: git.branch.clone().unwrap_or_else(|| "main".to_owned()),
                poll: std::time::Duration::from_secs(poll.clamp(1, 86_400)),
            }
        });
        if raw.git_repo_path.is_none() && follow.is_none() {
            return None;
        }
        // The repository is the folder holding platform.yml (in the legacy images gitRepoPath names it).
        let repo = lexical(platform).parent()?.to_owned();
        let named_elsewhere = raw
            .git_repo_path
            .as_deref()
            .map(|named| lexical(&self.resolve(named)))
            .filter(|named| named != &repo);
        Some(GitSettings {
            repo,
            follow,
            named_elsewhere,
        })
    }

    /// `store.etcd`: endpoints as URLs, a prefix, TLS files that exist; no settings repository beside it.
    fn check_store(&mut self, raw: &RawConfig) -> Option<EtcdStore> {
        let etcd = raw.store.as_ref()?.etcd.as_ref()?;
        if etcd.endpoints.is_empty() {
            self.common.problems.push(
                "store.etcd.endpoints: give the client URL of every etcd member (http://host:2379)"
                    .into(),
            );
        }
        for endpoint in &etcd.endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                self.common.problems.push(format!(
                    "store.etcd.endpoints: {endpoint} is not an http:// or https:// URL"
                ));
            }
        }
        let prefix = etcd.prefix.clone().unwrap_or_else(|| "/pryv/".to_owned());
        if prefix.is_empty() {
            self.common
                .problems
                .push("store.etcd.prefix: empty; give one such as /pryv/".into());
        }
        let isolated = etcd
            .isolated_after_seconds
            .unwrap_or(DEFAULT_ISOLATED_AFTER_S);
        if !(0.5..=60.0).contains(&isolated) {
            self.common.problems.push(format!(
                "store.etcd.isolatedAfterSeconds: {isolated} must be between 0.5 and 60"
            ));
        }
        let lease = etcd.lease_seconds.unwrap_or(DEFAULT_LEASE_S);
        if !(2..=300).contains(&lease) {
            self.common.problems.push(format!(
                "store.etcd.leaseSeconds: {lease} must be between 2 and 300"
            ));
        }
        if raw.git_repo_path.is_some() || raw.settings.git.is_some() {
            self.common.problems.push(
                "gitRepoPath / settings.git: not available with store.etcd (the store keeps the history); remove one"
                    .into(),
            );
        }
        let (ca_file, identity) = self.check_etcd_tls(etcd.tls.as_ref());
        Some(EtcdStore {
            endpoints: etcd
                .endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            prefix,
            ca_file,
            identity,
            isolated_after: std::time::Duration::from_secs_f64(isolated.clamp(0.5, 60.0)),
            lease: std::time::Duration::from_secs(lease.clamp(2, 300)),
            keep_audit_entries: etcd.keep_audit_entries.unwrap_or(10_000).max(1),
        })
    }

    /// `store.etcd.tls`: files that exist, a certificate and its key together. (CA, client identity.)
    fn check_etcd_tls(
        &mut self,
        tls: Option<&RawEtcdTls>,
    ) -> (Option<PathBuf>, Option<(PathBuf, PathBuf)>) {
        let file = |checks: &mut Self, name: &str, value: Option<&String>| {
            let path = checks.resolve(value?);
            if !path.is_file() {
                checks.common.problems.push(format!(
                    "store.etcd.tls.{name}: {} is not a file",
                    path.display()
                ));
            }
            Some(path)
        };
        let ca_file = file(self, "caFile", tls.and_then(|t| t.ca_file.as_ref()));
        let cert = file(self, "certFile", tls.and_then(|t| t.cert_file.as_ref()));
        let key = file(self, "keyFile", tls.and_then(|t| t.key_file.as_ref()));
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                self.common
                    .problems
                    .push("store.etcd.tls: give both certFile and keyFile, or neither".into());
                None
            }
        };
        (ca_file, identity)
    }

    /// (timeout, CA file) of notifications.
    fn check_notify(&mut self, notify: &RawNotify) -> (f64, Option<PathBuf>) {
        let timeout = notify.timeout_seconds.unwrap_or(DEFAULT_NOTIFY_TIMEOUT_S);
        if !(timeout > 0.0 && timeout <= 3600.0) {
            self.common.problems.push(format!(
                "notify.timeoutSeconds: {timeout} must be between 0 and 3600"
            ));
        }
        let ca_file = notify.ca_file.as_deref().map(|p| self.resolve(p));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            self.common
                .problems
                .push(format!("notify.caFile: {} is not a file", ca.display()));
        }
        (timeout, ca_file)
    }
}

// One named check per section, then the one place that builds `Config` from their results.
fn validate(
    path: &Path,
    raw: RawConfig,
    problems: Vec<String>,
    overrides: &Overrides,
) -> Result<Config, Error> {
    let mut checks = Checks {
        common: pryv_daemon::ConfigChecks::new(path, problems),
        overrides,
    };
    let listen = checks.check_listen(&raw.http);
    let (templates_path, platform_config, platform_template, database_path, credentials_file) =
        checks.check_paths(&raw);
    let tls = checks.check_tls(raw.tls.as_ref());
    checks.check_internals(&raw.internals);
    let (notify_timeout, notify_ca_file) = checks.check_notify(&raw.notify);
    let git = checks.check_git(&raw, &platform_config);
    let etcd = checks.check_store(&raw);
    let followers = checks.check_followers(raw.followers);
    let unknown_keys = unknown_keys(&raw.other);
    let Some(listen) = listen.filter(|_| checks.common.problems.is_empty()) else {
        return Err(Error::Config {
            path: path.to_owned(),
            problems: checks.common.problems,
        });
    };
    Ok(Config {
        path: path.to_owned(),
        listen,
        max_connections: raw
            .http
            .max_connections
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        templates_path,
        allow_links_to: raw
            .templates
            .allow_links_to
            .iter()
            .map(|p| checks.resolve(p))
            .collect(),
        platform_config,
        platform_template,
        database_path,
        credentials_file,
        internals: Internals(raw.internals),
        followers,
        admin_key: raw.admin_key.map(Secret::new),
        tls,
        notify_timeout: std::time::Duration::from_secs_f64(notify_timeout),
        notify_concurrency: raw
            .notify
            .concurrency
            .unwrap_or(DEFAULT_NOTIFY_CONCURRENCY)
            .max(1),
        notify_ca_file,
        cors_origins: raw.cors.allowed_origins,
        metrics_token: raw.metrics.token.filter(|t| !t.is_empty()),
        register_url: raw.register_url.map(|u| u.trim_end_matches('/').to_owned()),
        platform_users_timeout: raw.platform_users.timeout(),
        single_node_core_url: raw
            .platform_users
            .single_node_core_url
            .unwrap_or_else(|| DEFAULT_SINGLE_NODE_CORE_URL.to_owned()),
        core_urls: raw.platform_users.core_urls,
        unknown_keys,
        git,
        etcd,
    })
}

/// `path` without `.` and with each `..` taking its parent away (no file system access): how a resolved
/// `../x` compares with a folder.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Top-level keys this leader does not know (a warning, not an error: older files carry legacy keys).
fn unknown_keys(other: &IndexMap<String, Value>) -> Vec<String> {
    let known: BTreeSet<&str> = ACCEPTED_KEYS.iter().copied().collect();
    other
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect()
}

impl RawPlatformUsers {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            self.timeout_seconds
                .unwrap_or(DEFAULT_NOTIFY_TIMEOUT_S)
                .clamp(0.1, 600.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_config(dir: &Path, json: &Value) -> PathBuf {
        std::fs::create_dir_all(dir.join("data/core")).unwrap();
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        let path = conf.join("config-leader.json");
        std::fs::write(&path, serde_json::to_string_pretty(json).unwrap()).unwrap();
        path
    }

    fn legacy() -> Value {
        json!({
            "http": {"ip": "127.0.0.1", "port": 7000},
            "templatesPath": "../data",
            "databasePath": "/var/pryv/config-leader/database",
            "platformSettings": {"platformConfig": "platform.yml"},
            "credentials": {"filePath": "/var/pryv/credentials.txt"},
            "internals": {"CORE_SYSTEM_KEY": "SECRET", "FIXED": "kept"},
            "followers": {"k1": {"url": "https://co1.pryv.me/", "role": "core"}},
            "logs": {"console": {"active": true}},
            "registerUrl": "https://reg.pryv.me",
            "gitRepoPath": "/x",
            "somethingNew": 1
        })
    }

    #[test]
    fn legacy_file_loads_with_relative_paths_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &legacy());
        let config = Config::load(&path, &Overrides::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.templates_path, dir.path().join("conf/../data"));
        assert_eq!(config.platform_config, dir.path().join("conf/platform.yml"));
        assert_eq!(config.followers[0].role, "core");
        assert_eq!(config.unknown_keys, ["somethingNew"]);
    }

    #[test]
    fn the_settings_repository_is_the_folder_of_platform_yml_whatever_git_repo_path_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &legacy());
        let config = Config::load(&path, &Overrides::default()).unwrap();
        let git = config
            .git
            .clone()
            .expect("gitRepoPath turns the history in git on");
        assert_eq!(git.repo, dir.path().join("conf"));
        assert_eq!(git.named_elsewhere.as_deref(), Some(Path::new("/x")));
        assert!(git.follow.is_none());
        let warnings = crate::commands::warnings(&config);
        assert!(
            warnings.iter().any(|w| w.contains("gitRepoPath is /x")),
            "{warnings:?}"
        );

        let mut json = legacy();
        json["gitRepoPath"] = json!(".");
        json["settings"] = json!({"git": {"remote": "", "pollSeconds": 0}});
        let path = write_config(dir.path(), &json);
        let problems = match Config::load(&path, &Overrides::default()) {
            Err(Error::Config { problems, .. }) => problems,
            other => panic!("{other:?}"),
        };
        assert!(
            problems.iter().any(|p| p.contains("settings.git.remote")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("pollSeconds: 0")),
            "{problems:?}"
        );
    }

    #[test]
    fn secrets_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = legacy();
        json["adminKey"] = json!("SECRET");
        let path = write_config(dir.path(), &json);
        let first = Config::load(&path, &Overrides::default()).unwrap();
        let generated = first.internals.0["CORE_SYSTEM_KEY"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(generated.len(), 32);
        assert_ne!(generated, "SECRET");
        assert_eq!(first.internals.0["FIXED"], "kept");
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk["internals"]["CORE_SYSTEM_KEY"], generated.as_str());
        assert_eq!(
            on_disk["logs"],
            json!({"console": {"active": true}}),
            "rest of file kept"
        );
        let second = Config::load(&path, &Overrides::default()).unwrap();
        assert_eq!(second.internals.0["CORE_SYSTEM_KEY"], generated.as_str());
        assert_eq!(
            second.admin_key.unwrap().expose(),
            first.admin_key.unwrap().expose()
        );
    }

    #[test]
    fn the_etcd_store_is_checked_and_keeps_secrets_out_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = legacy();
        json.as_object_mut().unwrap().remove("gitRepoPath");
        json["adminKey"] = json!("SECRET");
        json["store"] = json!({"etcd": {"endpoints": ["http://10.0.0.1:2379/"]}});
        let path = write_config(dir.path(), &json);
        let config = Config::load(&path, &Overrides::default()).unwrap();
        let etcd = config.etcd.clone().expect("etcd mode");
        assert_eq!(etcd.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(etcd.prefix, "/pryv/");
        assert_eq!(etcd.isolated_after, std::time::Duration::from_secs(3));
        // Generated once for every replica, in the store: the placeholders stay in the file.
        assert_eq!(config.internals.0["CORE_SYSTEM_KEY"], "SECRET");
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk["adminKey"], "SECRET");
        assert_eq!(
            config.platform_in_force(),
            config.database_path.join("replica/platform.yml")
        );
        assert!(
            crate::commands::warnings(&config)
                .iter()
                .any(|w| w.contains("store.etcd") && w.contains("first start")),
        );

        json["store"] = json!({"etcd": {"endpoints": ["etcd:2379"], "prefix": "", "isolatedAfterSeconds": 0,
            "tls": {"certFile": "cert.pem"}}});
        json["settings"] = json!({"git": {"remote": "/tmp/r"}});
        let path = write_config(dir.path(), &json);
        let problems = match Config::load(&path, &Overrides::default()) {
            Err(Error::Config { problems, .. }) => problems,
            other => panic!("{other:?}"),
        };
        for expected in [
            "etcd:2379 is not an http",
            "store.etcd.prefix: empty",
            "isolatedAfterSeconds: 0",
            "not available with store.etcd",
            "store.etcd.tls.certFile",
            "both certFile and keyFile",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut json = legacy();
        json["http"]["port"] = json!("seventy");
        json["templatesPath"] = json!("/no/such/folder");
        json["followers"] = json!({"verysecretkey": {"url": "https://x/"}});
        let path = write_config(dir.path(), &json);
        let err = Config::load(&path, &Overrides::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("http.port"), "{text}");
        assert!(text.contains("templatesPath"), "{text}");
        assert!(
            text.contains("followers[0] (https://x/): \"role\" is missing"),
            "{text}"
        );
        assert!(!text.contains("verysecretkey"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &legacy());
        let overrides = Overrides {
            port: Some(7100),
            ip: Some("0.0.0.0".parse().unwrap()),
            ..Overrides::default()
        };
        let config = Config::load(&path, &overrides).unwrap();
        assert_eq!(config.listen, "0.0.0.0:7100".parse().unwrap());
    }

    #[test]
    fn malformed_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let err = Config::load(&path, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("c.json"), "{err}");
        std::fs::write(&path, "{ nope").unwrap();
        let err = Config::load(&path, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn a_key_of_the_wrong_shape_does_not_hide_the_other_problems() {
        let (raw, problems) = read_sections(json!({
            "http": "not an object",
            "notify": {"timeoutSeconds": "ten"},
            "templatesPath": "../data"
        }))
        .unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("http:") && problems[1].starts_with("notify:"));
        assert_eq!(raw.templates_path.as_deref(), Some("../data"));
    }
}
