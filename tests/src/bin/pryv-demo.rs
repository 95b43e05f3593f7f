//! The main job on one machine, with nothing to install: lays out a single-node platform from the embedded
//! templates under a folder (default `./demo`), fills in demo values, then runs a leader and a follower that
//! writes the machine's real configuration tree under `<folder>/pryv/`. The restart command is `true`, so no
//! container is touched. `--once` stops after the follower's first fetch.
#![allow(clippy::print_stdout)]
// Test and tool code: blocking calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use config_leader::tooling::init::{InitOptions, Topology, init};
use pryv_render::PlatformFile;
use tokio_util::sync::CancellationToken;

const DEMO_VALUES: &[(&str, &str)] = &[
    ("DOMAIN", "pryv.localhost"),
    ("REG_MASTER_IP_ADDRESS", "127.0.0.1"),
    ("PLATFORM_NAME", "Demo platform"),
    ("SUPPORT_LINK", "https://pryv.localhost/support"),
    ("TERMS_OF_USE_LINK", "https://pryv.localhost/terms"),
    ("MAIL_FROM_NAME", "Demo platform"),
    ("MAIL_FROM_ADDRESS", "no-reply@pryv.localhost"),
    ("MAIL_SMTP_HOST", "localhost"),
    ("MAIL_SMTP_USER", "demo"),
    ("MAIL_SMTP_PASS", "demo"),
];

fn main() -> ExitCode {
    let mut once = false;
    let mut out = PathBuf::from("demo");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--once" => once = true,
            "-h" | "--help" => {
                println!("usage: pryv-demo [--once] [FOLDER]   (default folder: ./demo)");
                return ExitCode::SUCCESS;
            }
            folder => out = PathBuf::from(folder),
        }
    }
    let _logs = pryv_daemon::init_logging(pryv_daemon::LogFormat::Human);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pryv-demo: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(&out, once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pryv-demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(out: &Path, once: bool) -> anyhow::Result<()> {
    pryv_e2e::install_crypto();
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let leader_config = out.join("config-leader/conf/config-leader.json");
    lay_out(&out, &leader_config)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(pryv_daemon::cancel_on_signal(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let leader_addr = listener.local_addr()?;
    let follower_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let follower_port = follower_listener.local_addr()?.port();
    let mut config =
        config_leader::Config::load(&leader_config, &config_leader::Overrides::default())?;
    // The leader notifies its follower where it really listens (an ephemeral port, not the file's 6000).
    for follower in &mut config.followers {
        follower.url = format!("http://127.0.0.1:{follower_port}/");
    }
    let admin_key = config
        .admin_key
        .as_ref()
        .map(|key| key.expose().to_owned())
        .unwrap_or_default();
    let leader = tokio::spawn(config_leader::run(config, listener, shutdown.clone()));

    let follower_config = config_follower::Config::load(
        &out.join("config-follower/conf/config-follower.json"),
        &config_follower::Overrides {
            ip: Some([127, 0, 0, 1].into()),
            port: Some(follower_port),
            leader_url: Some(format!("http://{leader_addr}")),
            restart_command: Some(vec!["true".into()]),
            ..config_follower::Overrides::default()
        },
    )?;
    let key = follower_config.key.expose().to_owned();
    let follower = tokio::spawn(config_follower::run(
        follower_config,
        follower_listener,
        shutdown.clone(),
    ));

    // The follower answers once its first fetch is written.
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let health = format!("http://127.0.0.1:{follower_port}/health");
    while client.get(&health).send().await.is_err() {
        if Instant::now() > deadline || leader.is_finished() || follower.is_finished() {
            shutdown.cancel();
            anyhow::bail!("the follower did not converge in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    print_where(&out, leader_addr, follower_port, &key, &admin_key);
    if once {
        shutdown.cancel();
    } else {
        println!("running; press Ctrl-C to stop");
    }
    leader.await??;
    follower.await??;
    Ok(())
}

/// A single-node platform with demo values, unless one is already laid out there.
fn lay_out(out: &Path, leader_config: &Path) -> anyhow::Result<()> {
    if !leader_config.exists() {
        init(&InitOptions {
            topology: Topology::SingleNode,
            cores: 1,
            reg_slave: false,
            out: out.to_owned(),
            leader_url: "http://127.0.0.1:7000".into(),
            force: false,
        })?;
        fill_demo_values(&out.join("config-leader/conf/platform.yml"))?;
        println!("laid out a single-node platform under {}", out.display());
    }

    Ok(())
}

/// What the demo wrote and how to talk to it.
fn print_where(
    out: &Path,
    leader_addr: std::net::SocketAddr,
    follower_port: u16,
    key: &str,
    admin_key: &str,
) {
    let files = count_files(&out.join("pryv"));
    println!(
        "follower wrote {files} file(s) under {}",
        out.join("pryv").display()
    );
    println!("leader:   http://{leader_addr}   (GET /conf with header 'authorization: {key}')");
    println!("follower: http://127.0.0.1:{follower_port}");
    println!(
        "try: edit {} then notify every follower, as the install guide does:\n  curl -X POST \"http://{leader_addr}/admin/notify?auth={admin_key}\"",
        out.join("config-leader/conf/platform.yml").display()
    );
}

fn fill_demo_values(platform_path: &Path) -> anyhow::Result<()> {
    let mut platform = PlatformFile::parse(&std::fs::read_to_string(platform_path)?)?;
    for group in platform.vars.values_mut() {
        for (name, setting) in &mut group.settings {
            if let Some((_, value)) = DEMO_VALUES.iter().find(|(n, _)| n == name) {
                setting.value = serde_json::Value::String((*value).to_owned());
            }
        }
    }
    std::fs::write(platform_path, platform.to_yaml()?)?;
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count_files(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
