//! The `jobyard` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: under load the job pipeline allocates and frees
/// small buffers at a high rate, where glibc's malloc spent a fifth of the process's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    jobyard::cli::run(jobyard::cli::Cli::parse())
}
