//! `keygate`: manage API keys from the command line.
//!
//! ```text
//! keygate create --name billing --scope invoices:read
//! keygate list
//! keygate rotate ID --grace 24h
//! keygate revoke ID
//! keygate serve --listen 127.0.0.1:8080   # the admin API and its web console
//! ```
//!
//! See `keygate --help` and docs/cli.md. Exit codes are listed in the help text.

mod audit;
mod cli;
mod commands;
mod error;
mod limits;
mod output;
mod owners;
mod policy;
mod publish;
mod scan;
mod serve;
mod store;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and version go to stdout and succeed; every other parse error is a usage error.
            return if error.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            // The commands print their own note about the development pepper (the library's
            // warning would say it twice, and advise a pepper a development store refuses).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,keygate::development_pepper=off".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keygate: cannot start: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keygate: {error}");
            error.exit_code()
        }
    }
}
