//! The `jobyard` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    jobyard::cli::run(jobyard::cli::Cli::parse())
}
