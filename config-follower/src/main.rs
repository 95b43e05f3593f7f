//! Entry point: parse the command line, set up logs, run, map failures to exit codes (78 = bad configuration).

use std::process::ExitCode;

use clap::Parser;
use config_follower::cli::Cli;
use config_follower::{Config, Error};
use pryv_daemon::{EXIT_CONFIG, cancel_on_signal, init_logging};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let Some(path) = cli.config.clone() else {
        eprintln!(
            "config-follower: no configuration file; pass --config <path> or set CONFIG_FOLLOWER_CONFIG"
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match Config::load(&path, &cli.overrides()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("config-follower: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("config-follower: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match config_follower::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("config-follower: {err}");
                match err {
                    Error::Config { .. } | Error::Tls(_) => ExitCode::from(EXIT_CONFIG),
                    _ => ExitCode::FAILURE,
                }
            }
        }
    })
}
