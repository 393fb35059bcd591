//! The `image-ledger` command: run the server, or work on a data directory.

mod cli;

// glibc's allocator spent a quarter of replay time on small allocations freed
// on another thread; mimalloc handles that pattern well. The
// `system-allocator` feature leaves it out for heap profilers.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

fn main() -> std::process::ExitCode {
    let args = match cli::config_file::apply(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli::config_file::FromFile { args, file } = args;
    let cli = cli::Cli::parse_from(args);
    // Only a server exports traces; a bad OTEL_* setting stops it here,
    // before anything is opened.
    let traces = match &cli.command {
        cli::Cmd::Serve(_) => match image_ledger::traces::Traces::from_env() {
            Ok(traces) => traces,
            Err(err) => {
                eprintln!("error: {err}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match cli.log_format {
        // One object a line, the event's fields beside its message, and
        // the span it happened in, for log pipelines.
        cli::LogFormat::Json => Box::new(
            logs.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter),
        ),
        cli::LogFormat::Text => Box::new(
            logs.with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        ),
    };
    // No layer at all when traces are off: an absent layer in the stack
    // (None) would make every callsite the logs filter out be asked again
    // at each use.
    let registry = tracing_subscriber::registry().with(logs);
    match &traces {
        Some(traces) => registry.with(traces.layer()).init(),
        None => registry.init(),
    }
    if let Some(traces) = &traces {
        tracing::info!(
            endpoint = traces.endpoint(),
            "exporting traces over OTLP/gRPC"
        );
        if let Some(warning) = traces.endpoint_warning() {
            tracing::warn!(endpoint = traces.endpoint(), "{warning}");
        }
    }
    let outcome = cli::run(cli, &file);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(cli::exit_code(&err))
        }
    }
}
