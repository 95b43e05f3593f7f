//! Entry point: parse the command line, set up logs, run, map failures to exit codes (78 = bad configuration).

use std::process::ExitCode;

use clap::Parser;
use config_follower::cli::Cli;
use config_follower::{Config, Error};
use pryv_daemon::{EXIT_CONFIG, init_logging, run_until_signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _logs = init_logging(cli.log_format);
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
    run_until_signal("config-follower", |shutdown| async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!(
                    "config-follower: cannot listen on {}: {err}; free the port or set http.port / --port",
                    config.listen
                );
                return ExitCode::FAILURE;
            }
        };
        match config_follower::run(config, listener, shutdown).await {
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
