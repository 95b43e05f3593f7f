//! Entry point: parse the command line, set up logs, run the command, map failures to exit codes
//! (78 = bad configuration, 1 = anything else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use config_leader::cli::{Cli, Command, GlobalArgs};
use config_leader::tooling::init::{self, InitOptions};
use config_leader::{Config, Error, commands};
use pryv_daemon::{EXIT_CONFIG, init_logging, run_until_signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _logs = init_logging(cli.global.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Init {
            topology,
            from,
            cores,
            reg_slave,
            out,
            leader_url,
            force,
        } => run_init(
            &InitOptions {
                topology: topology.unwrap_or(init::Topology::SingleNode),
                cores,
                reg_slave,
                out,
                leader_url,
                force,
            },
            topology.is_some(),
            from,
        ),
        command => match load(&cli.global) {
            Ok(config) => run_on_config(command, config),
            Err(code) => code,
        },
    }
}

/// The commands that read the configuration first.
fn run_on_config(command: Command, config: Config) -> ExitCode {
    let done = |printed: Result<String, config_leader::error::Error>| match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    };
    match command {
        Command::Check => check(&config),
        Command::Package { out } => done(
            config_leader::tooling::package::package(&config, &out).map(|archives| {
                let mut text: String = archives
                    .iter()
                    .map(|a| format!("{}\n", a.display()))
                    .collect();
                text.push_str("extract each archive into PRYV_CONF_ROOT of its machine\n");
                text
            }),
        ),
        Command::Diff { from_revision } => done(commands::diff(&config, from_revision)),
        Command::Store {
            action: config_leader::cli::StoreAction::Migrate { .. },
        } => done(config_leader::etcd::migrate::migrate(&config)),
        Command::Templates {
            action: config_leader::cli::TemplatesAction::Push { folder },
        } => done(config_leader::etcd::import::push_templates(
            &config,
            folder.as_deref(),
        )),
        Command::Settings {
            action: config_leader::cli::SettingsAction::Import { file, message },
        } => done(config_leader::etcd::import::import(&config, &file, message)),
        Command::Render {
            role,
            out,
            zone,
            follower,
        } => {
            let target = match (zone, follower) {
                (Some(zone), _) => commands::RenderFor::Zone(zone),
                (None, Some(follower)) => commands::RenderFor::Follower(follower),
                (None, None) => commands::RenderFor::Platform,
            };
            done(
                commands::render(&config, &role, &out, &target).map(|count| {
                    format!(
                        "wrote {count} file(s) of role '{role}' to {}\n",
                        out.display()
                    )
                }),
            )
        }
        _ => serve(config),
    }
}

fn load(global: &GlobalArgs) -> Result<Config, ExitCode> {
    let Some(path) = &global.config else {
        eprintln!(
            "config-leader: no configuration file; pass --config <path> or set CONFIG_LEADER_CONFIG"
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    Config::load(path, &global.overrides()).map_err(|err| {
        eprintln!("config-leader: {err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run_init(options: &InitOptions, topology_given: bool, from: Option<PathBuf>) -> ExitCode {
    let laid_out = match from {
        None if !topology_given => {
            eprintln!("config-leader init: give --topology single-node|cluster, or --from <release>");
            return ExitCode::from(2);
        }
        None => init::init(options),
        Some(release) => init::Release::read(&release).and_then(|release| {
            for path in &release.unplaced {
                println!("not placed (outside config-leader/conf/template-platform.yml and config-leader/data/): {path}");
            }
            let options = InitOptions {
                topology: if topology_given {
                    options.topology
                } else {
                    release.topology()
                },
                ..options.clone()
            };
            init::init_from(&options, &release)
        }),
    };
    match laid_out {
        Ok(files) => {
            println!(
                "wrote {} file(s) under {}",
                files.len(),
                options.out.display()
            );
            println!(
                "next: set the REPLACE_ME values in {}, then run: config-leader --config {} check",
                options
                    .out
                    .join("config-leader/conf/platform.yml")
                    .display(),
                options
                    .out
                    .join("config-leader/conf/config-leader.json")
                    .display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn check(config: &Config) -> ExitCode {
    for warning in commands::warnings(config) {
        println!("warning: {warning}");
    }
    match commands::check(config) {
        Ok(problems) if problems.is_empty() => {
            println!("ok: every role renders and no setting is left to fill in");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            println!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
        Err(err) => fail(&err),
    }
}

fn serve(config: Config) -> ExitCode {
    run_until_signal("config-leader", |shutdown| async move {
        let listen = config.listen;
        let leader = match config_leader::Leader::start(config, &shutdown).await {
            Ok(leader) => leader,
            Err(err) => return fail(&err),
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!(
                    "config-leader: cannot listen on {listen}: {err}; free the port or set http.port / --port"
                );
                return ExitCode::FAILURE;
            }
        };
        match leader.serve(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&err),
        }
    })
}

fn fail(err: &Error) -> ExitCode {
    eprintln!("config-leader: {err}");
    match err {
        Error::Config { .. }
        | Error::ConfigRead { .. }
        | Error::Tls(_)
        | Error::Database { .. } => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::FAILURE,
    }
}
