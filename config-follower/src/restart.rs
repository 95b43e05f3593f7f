//! Restarting services through the compose tool. Requests go through one queue worked by one task: requests
//! that arrive while a command runs are merged, so a burst of changes gives one restart per service, and two
//! restarts never run at once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compose::{CONF_ROOT_VAR, default_conf_root};
use crate::status::{RestartRecord, StatusStore, now_unix};

/// Key under which `up -d` of the whole project is recorded in the status.
pub const PROJECT: &str = "(project)";

/// What to do: `up -d` the project (the compose file changed) and/or restart some services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartJob {
    pub up: bool,
    pub services: BTreeSet<String>,
}

impl RestartJob {
    pub fn is_empty(&self) -> bool {
        !self.up && self.services.is_empty()
    }

    fn merge(&mut self, other: RestartJob) {
        self.up |= other.up;
        self.services.extend(other.services);
    }
}

/// Handle to the restart queue.
#[derive(Clone)]
pub struct Restarter {
    queue: mpsc::UnboundedSender<RestartJob>,
}

impl Restarter {
    /// Starts the worker. `command` is the compose tool (`None` = detect `docker compose`, else
    /// `docker-compose`).
    pub fn spawn(
        command: Option<Vec<String>>,
        compose_file: PathBuf,
        timeout: Duration,
        status: Arc<StatusStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, mut jobs) = mpsc::unbounded_channel::<RestartJob>();
        tokio::spawn(async move {
            let mut program: Option<Vec<String>> = command;
            loop {
                let mut job = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    job = jobs.recv() => match job { Some(job) => job, None => break },
                };
                while let Ok(more) = jobs.try_recv() {
                    job.merge(more);
                }
                let program = match &program {
                    Some(program) => program.clone(),
                    None => program.insert(detect_compose().await).clone(),
                };
                run_job(&program, &compose_file, timeout, &job, &status).await;
            }
        });
        Self { queue }
    }

    /// Queues a job (no-op when empty).
    pub fn request(&self, job: RestartJob) {
        if !job.is_empty() && self.queue.send(job).is_err() {
            tracing::warn!("restart requested while shutting down; ignored");
        }
    }
}

async fn detect_compose() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        tracing::info!("docker compose plugin not found; using docker-compose");
        vec!["docker-compose".into()]
    }
}

async fn run_job(
    program: &[String],
    compose_file: &std::path::Path,
    timeout: Duration,
    job: &RestartJob,
    status: &StatusStore,
) {
    if job.up {
        let outcome = run(program, compose_file, &["up", "-d"], timeout).await;
        record(status, [PROJECT.to_owned()].iter(), "up", &outcome);
    }
    if !job.services.is_empty() {
        let mut args = vec!["restart"];
        args.extend(job.services.iter().map(String::as_str));
        let outcome = run(program, compose_file, &args, timeout).await;
        record(status, job.services.iter(), "restart", &outcome);
    }
}

async fn run(
    program: &[String],
    compose_file: &std::path::Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(), String> {
    let Some((exe, lead)) = program.split_first() else {
        return Err("empty restart command".into());
    };
    let mut command = Command::new(exe);
    command
        .args(lead)
        .arg("-f")
        .arg(compose_file)
        .args(args)
        .kill_on_drop(true);
    // Compose files mount `${PRYV_CONF_ROOT}/pryv/...`: give it the same default the follower uses.
    if std::env::var_os(CONF_ROOT_VAR).is_none()
        && let Some(root) = compose_file.parent().and_then(default_conf_root)
    {
        command.env(CONF_ROOT_VAR, root);
    }
    tracing::info!(command = %exe, args = ?args, "running restart command");
    match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
        Ok(Err(err)) => Err(format!("cannot run {exe}: {err}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!("{} ({})", output.status, stderr.trim()))
        }
    }
}

fn record<'a>(
    status: &StatusStore,
    services: impl Iterator<Item = &'a String>,
    action: &str,
    outcome: &Result<(), String>,
) {
    let services: Vec<&String> = services.collect();
    match outcome {
        Ok(()) => tracing::info!(action, services = ?services, "restart command succeeded"),
        Err(err) => {
            tracing::error!(action, services = ?services, error = %err, "restart command failed")
        }
    }
    let at = now_unix();
    status.update(|s| {
        for service in services {
            s.restarts.insert(
                service.clone(),
                RestartRecord {
                    at,
                    action: action.to_owned(),
                    ok: outcome.is_ok(),
                    error: outcome.as_ref().err().cloned(),
                },
            );
        }
    });
}
