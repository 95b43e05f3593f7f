//! Command line: `serve` (default), `check`, `render`. Every setting can come from a flag or from the
//! environment (`CONFIG_LEADER_*`), which win over the file, so units and compose files need no edited JSON.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;
use pryv_daemon::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "config-leader",
    version,
    about = "Serves each follower the rendered configuration of its role"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path of config-leader.json.
    #[arg(long, global = true, env = "CONFIG_LEADER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides http.ip).
    #[arg(long, global = true, env = "CONFIG_LEADER_HTTP_IP")]
    pub ip: Option<IpAddr>,
    /// Port to listen on (overrides http.port; 0 picks a free port).
    #[arg(long, global = true, env = "CONFIG_LEADER_HTTP_PORT")]
    pub port: Option<u16>,
    /// Folder with one sub-folder of templates per role (overrides templatesPath).
    #[arg(long, global = true, env = "CONFIG_LEADER_TEMPLATES_PATH")]
    pub templates_path: Option<PathBuf>,
    /// Path of platform.yml (overrides platformSettings.platformConfig).
    #[arg(long, global = true, env = "CONFIG_LEADER_PLATFORM_CONFIG")]
    pub platform_config: Option<PathBuf>,
    /// Folder of the leader's database (overrides databasePath).
    #[arg(long, global = true, env = "CONFIG_LEADER_DATABASE_PATH")]
    pub database_path: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key-file, serve HTTPS only (overrides tls.certFile).
    #[arg(long, global = true, env = "CONFIG_LEADER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (overrides tls.keyFile).
    #[arg(long, global = true, env = "CONFIG_LEADER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CONFIG_LEADER_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve followers (the default).
    Serve,
    /// Render every role and report every problem; exit non-zero if there is any.
    Check,
    /// Write one role's rendered tree to a folder, for review or diff: as the platform's settings give it,
    /// in a zone, or as one follower gets it (its zone and its own variables).
    Render {
        /// Role to render (a folder of templatesPath).
        #[arg(long)]
        role: String,
        /// Folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Render with this zone's overrides (`zones.<zone>` of platform.yml).
        #[arg(long, conflicts_with = "follower")]
        zone: Option<String>,
        /// Render as this follower (its name or URL in config-leader.json) gets it.
        #[arg(long)]
        follower: Option<String>,
    },
    /// Show what the settings on disk change against a recorded revision: per role the files (unified
    /// diffs, internal secrets as ***) and the services each follower would restart.
    Diff {
        /// Settings revision to compare with (`GET /admin/settings/history`); default: the last one recorded.
        #[arg(long)]
        from_revision: Option<i64>,
    },
    /// Write one archive per machine (<name>.tgz) with what it needs; the leader's machine also gets the
    /// leader's folder.
    /// Settings: `settings import <file>` saves an edited platform.yml as the next revision (etcd mode).
    Settings {
        #[command(subcommand)]
        action: SettingsAction,
    },
    /// Templates: `templates push` makes a validated templates folder the one every replica serves (etcd).
    Templates {
        #[command(subcommand)]
        action: TemplatesAction,
    },
    /// The state store: `store migrate --to etcd` copies a platform run on SQLite into `store.etcd`.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    Package {
        /// Folder to write the archives into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Lay out a new platform from our templates: the leader's folder and one follower configuration per
    /// machine, with matching random keys.
    Init {
        /// single-node or cluster (with --from: taken from the release when omitted).
        #[arg(long, value_enum)]
        topology: Option<crate::tooling::init::Topology>,
        /// A Pryv.io release's templates (a .tgz or a folder holding config-leader/conf/template-platform.yml
        /// and config-leader/data/<role>/...) instead of our own.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Number of core machines (cluster).
        #[arg(long, default_value_t = 1)]
        cores: usize,
        /// Add a reg-slave machine (cluster).
        #[arg(long)]
        reg_slave: bool,
        /// The leader machine's PRYV_CONF_ROOT (e.g. /var/pryv).
        #[arg(long)]
        out: PathBuf,
        /// URL the other machines use to reach the leader.
        #[arg(long, default_value = "http://REPLACE_ME-leader:7000")]
        leader_url: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsAction {
    /// Validates `file` as a settings change is (every role renders) and saves it as the next revision in
    /// the etcd store: hand edits in etcd mode (the replicas do not watch platform.yml).
    Import {
        file: PathBuf,
        /// The history message (default: "imported from <file>").
        #[arg(long)]
        message: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplatesAction {
    /// Validates the templates folder (every role renders with the settings in force) and makes it the
    /// tree every replica serves (etcd mode: the replicas do not watch their local folders).
    Push {
        /// The folder to push (default: templatesPath).
        #[arg(long)]
        folder: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Copies the settings history, internals and admin users of this leader's database into the etcd
    /// store `store.etcd` names (stop the leader first; an etcd prefix holding settings is refused).
    Migrate {
        /// The store to copy to (only `etcd`).
        #[arg(long, value_enum)]
        to: StoreKind,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StoreKind {
    Etcd,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            ip: self.ip,
            port: self.port,
            templates_path: self.templates_path.clone(),
            platform_config: self.platform_config.clone(),
            database_path: self.database_path.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
        }
    }
}
