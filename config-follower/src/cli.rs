//! Command line and environment (`CONFIG_FOLLOWER_*`), which win over the file.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use pryv_daemon::LogFormat;

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "config-follower",
    version,
    about = "Fetches this machine's configuration from the leader and restarts what changed"
)]
pub struct Cli {
    /// Path of config-follower.json.
    #[arg(long, env = "CONFIG_FOLLOWER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address /notify listens on (overrides http.ip).
    #[arg(long, env = "CONFIG_FOLLOWER_HTTP_IP")]
    pub ip: Option<IpAddr>,
    /// Port /notify listens on (overrides http.port; 0 picks a free port).
    #[arg(long, env = "CONFIG_FOLLOWER_HTTP_PORT")]
    pub port: Option<u16>,
    /// Leader base URL (overrides leader.url).
    #[arg(long, env = "CONFIG_FOLLOWER_LEADER_URL")]
    pub leader_url: Option<String>,
    /// This follower's key (overrides leader.auth; prefer the environment to keep it out of `ps`).
    #[arg(long, env = "CONFIG_FOLLOWER_LEADER_AUTH", hide_env_values = true)]
    pub leader_auth: Option<String>,
    /// The machine's pryv/ folder (overrides paths.dataFolder).
    #[arg(long, env = "CONFIG_FOLLOWER_DATA_FOLDER")]
    pub data_folder: Option<PathBuf>,
    /// PEM CA certificate to trust for the leader (overrides leader.caFile).
    #[arg(long, env = "CONFIG_FOLLOWER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Compose tool, space separated, e.g. "docker compose" (overrides restart.command).
    #[arg(long, env = "CONFIG_FOLLOWER_RESTART_COMMAND")]
    pub restart_command: Option<String>,
    /// Do not watch */conf/ for local edits (overrides watch.enabled).
    #[arg(long, env = "CONFIG_FOLLOWER_NO_WATCH")]
    pub no_watch: bool,
    /// Re-fetch every N seconds; 0 = off (overrides poll.intervalSeconds).
    #[arg(long, env = "CONFIG_FOLLOWER_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Log format.
    #[arg(
        long,
        env = "CONFIG_FOLLOWER_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            ip: self.ip,
            port: self.port,
            leader_url: self.leader_url.clone(),
            leader_auth: self.leader_auth.clone(),
            data_folder: self.data_folder.clone(),
            ca_file: self.ca_file.clone(),
            restart_command: self
                .restart_command
                .as_ref()
                .map(|c| c.split_whitespace().map(str::to_owned).collect()),
            no_watch: self.no_watch,
            poll_interval: self.poll_interval,
        }
    }
}
