//! Log set-up: human lines by default, JSON lines on request; level from `RUST_LOG` (default `info`).
//! Logs go to stderr so stdout stays for command output (`check`).
//!
//! Lines are written by a thread of their own (`tracing-appender`'s non-blocking writer over a buffered
//! stderr, flushed whenever its queue is empty): a request never waits on a slow or stalled log sink
//! (journald, a full pipe), and a burst of request lines costs a few writes, not one per line. Should the
//! sink stall long enough to fill the queue (128,000 lines), further lines are dropped rather than
//! blocking the daemon.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Keeps the log writer's thread: hold it until the end of `main`, whose return (dropping it) writes out
/// what is still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init_logging(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}
