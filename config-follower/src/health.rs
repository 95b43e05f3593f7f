//! Is a restarted service healthy? Docker says, per container: the health status when the image or compose
//! file defines a healthcheck, else "running, not restarting, for a settle time". An optional probe per
//! service (HTTP answer or TCP connection) must pass as well.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pryv_protocol::UnhealthyService;
use pryv_protocol::follower_file::Probe;

use crate::config::HealthConfig;
use crate::restart::Restarter;

const POLL: Duration = Duration::from_millis(250);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_LINES: &str = "20";
const INSPECT_FORMAT: &str = "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.Restarting}}|{{.RestartCount}}|{{.State.ExitCode}}";

/// One look at a container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerState {
    status: String,
    /// Empty without a healthcheck.
    health: String,
    restarting: bool,
    restart_count: u64,
    exit_code: i64,
}

impl ContainerState {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.trim().split('|');
        Some(Self {
            status: fields.next()?.to_owned(),
            health: fields.next()?.to_owned(),
            restarting: fields.next()? == "true",
            restart_count: fields.next()?.parse().ok()?,
            exit_code: fields.next()?.parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        match (self.status.as_str(), self.health.as_str()) {
            (_, _) if self.restarting => format!("restarting (exit code {})", self.exit_code),
            ("exited" | "dead", _) => format!("{} ({})", self.status, self.exit_code),
            (status, "") => status.to_owned(),
            (status, health) => format!("{status}, {health}"),
        }
    }
}

/// Where one service stands while the gate waits.
#[derive(Debug, Default)]
struct Watch {
    container: Option<String>,
    last_state: String,
    /// Since when it has been running with the same restart count (no healthcheck).
    stable_since: Option<(Instant, u64)>,
    healthy: bool,
}

impl Watch {
    /// Healthy by Docker's account: its healthcheck says so, or (without one) it has been running, not
    /// restarting, with the same restart count for `settle`.
    fn docker_says_ok(&mut self, state: &ContainerState, settle: Duration) -> bool {
        if !state.health.is_empty() {
            return state.health == "healthy";
        }
        let running = state.status == "running" && !state.restarting;
        match (running, self.stable_since) {
            (false, _) => {
                self.stable_since = None;
                false
            }
            (true, Some((since, count))) if count == state.restart_count => {
                since.elapsed() >= settle
            }
            (true, _) => {
                self.stable_since = Some((Instant::now(), state.restart_count));
                settle.is_zero()
            }
        }
    }
}

/// The docker CLI next to the compose tool (`docker compose` → `docker`; `docker-compose` → `docker`).
fn docker_cli(tool: &[String]) -> String {
    match tool.first() {
        Some(first) if !first.ends_with("docker-compose") => first.clone(),
        _ => "docker".to_owned(),
    }
}

async fn docker(program: &str, args: &[&str]) -> Result<String, String> {
    let output = tokio::time::timeout(
        COMMAND_TIMEOUT,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{program} {} timed out", args.join(" ")))?
    .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Waits until every one of `services` is healthy, or the deadline: the first one still unhealthy then.
pub async fn wait_healthy(
    restarter: &Restarter,
    services: &[String],
    config: &HealthConfig,
) -> Result<(), UnhealthyService> {
    let tool = restarter.tool().await;
    let cli = docker_cli(&tool);
    let started = Instant::now();
    let mut watches: BTreeMap<&str, Watch> = services
        .iter()
        .map(|s| (s.as_str(), Watch::default()))
        .collect();
    loop {
        for (service, watch) in watches.iter_mut().filter(|(_, w)| !w.healthy) {
            look(restarter, &tool, &cli, service, watch, config).await;
        }
        if watches.values().all(|w| w.healthy) {
            return Ok(());
        }
        let explicitly_unhealthy = watches
            .iter()
            .find(|(_, w)| w.last_state.ends_with(", unhealthy"));
        let at_deadline = started.elapsed() >= config.deadline;
        if let Some((service, watch)) = explicitly_unhealthy.or_else(|| {
            at_deadline
                .then(|| watches.iter().find(|(_, w)| !w.healthy))
                .flatten()
        }) {
            let log_tail = match &watch.container {
                Some(id) => log_tail(&cli, id).await,
                None => Vec::new(),
            };
            return Err(UnhealthyService {
                service: (*service).to_owned(),
                state: watch.last_state.clone(),
                log_tail,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Updates `watch` from one look at the service's container (and its probe).
async fn look(
    restarter: &Restarter,
    tool: &[String],
    cli: &str,
    service: &str,
    watch: &mut Watch,
    config: &HealthConfig,
) {
    let container = match restarter
        .query(tool, &["ps", "-q", service], COMMAND_TIMEOUT)
        .await
    {
        Ok(out) => out
            .lines()
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
        Err(err) => {
            watch.last_state = format!("cannot list its container: {err}");
            return;
        }
    };
    let Some(id) = container else {
        watch.last_state = "no container".to_owned();
        watch.stable_since = None;
        return;
    };
    watch.container = Some(id.clone());
    let state = match docker(cli, &["inspect", "--format", INSPECT_FORMAT, &id]).await {
        Ok(out) => ContainerState::parse(&out),
        Err(err) => {
            watch.last_state = err;
            return;
        }
    };
    let Some(state) = state else {
        watch.last_state = "unreadable container state".to_owned();
        return;
    };
    watch.last_state = state.describe();
    if !watch.docker_says_ok(&state, config.settle) {
        return;
    }
    match config.probes.get(service) {
        None => watch.healthy = true,
        Some(probe) => match run_probe(probe).await {
            Ok(()) => watch.healthy = true,
            Err(err) => watch.last_state = format!("{}; probe failed: {err}", watch.last_state),
        },
    }
}

async fn run_probe(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp(address) => tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| format!("no connection to {address} within 2 s"))?
        .map(drop)
        .map_err(|err| format!("{address}: {err}")),
        Probe::Http(url) => {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(pryv_daemon::client_tls(None)?)
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|err| err.to_string())?;
            let response = client
                .get(url)
                .send()
                .await
                .map_err(|err| format!("{url}: {}", pryv_daemon::error_chain(&err)))?;
            let status = response.status();
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("{url} answered {status}"))
            }
        }
    }
}

/// The last lines of a container's log (stdout and stderr).
async fn log_tail(cli: &str, id: &str) -> Vec<String> {
    let output = tokio::time::timeout(
        COMMAND_TIMEOUT,
        tokio::process::Command::new(cli)
            .args(["logs", "--tail", LOG_LINES, id])
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.lines().map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_states_read_and_describe() {
        let running = ContainerState::parse("running||false|0|0\n").unwrap();
        assert_eq!(running.describe(), "running");
        let exited = ContainerState::parse("exited||false|2|1").unwrap();
        assert_eq!(exited.describe(), "exited (1)");
        let looping = ContainerState::parse("restarting||true|5|137").unwrap();
        assert_eq!(looping.describe(), "restarting (exit code 137)");
        let unhealthy = ContainerState::parse("running|unhealthy|false|0|0").unwrap();
        assert_eq!(unhealthy.describe(), "running, unhealthy");
        assert!(ContainerState::parse("garbage").is_none());
    }

    #[tokio::test]
    async fn probes_pass_only_when_something_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert!(run_probe(&Probe::Tcp(open.to_string())).await.is_ok());
        drop(listener);
        let closed = run_probe(&Probe::Tcp(open.to_string())).await.unwrap_err();
        assert!(closed.contains(&open.to_string()), "{closed}");
        let http = run_probe(&Probe::Http(format!("http://{open}/")))
            .await
            .unwrap_err();
        assert!(http.contains("http://"), "{http}");
    }

    #[test]
    fn docker_cli_beside_the_compose_tool() {
        assert_eq!(docker_cli(&["docker".into(), "compose".into()]), "docker");
        assert_eq!(
            docker_cli(&["/usr/local/bin/docker-compose".into()]),
            "docker"
        );
        assert_eq!(
            docker_cli(&["/opt/fake/docker".into(), "compose".into()]),
            "/opt/fake/docker"
        );
    }
}
