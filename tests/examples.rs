//! The embedding examples run as they are: the fan-in of `embed`, the axum service on plain
//! tokio and the actix service that mounts the API beside its own routes each check what they
//! show and exit non-zero when it is wrong.
//!
//! `cargo test` builds the examples before it runs the tests; run alone, this test needs
//! `cargo build --examples` first (it says so).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary, next to this test's in the target directory.
fn example(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let dir = test.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test` builds the examples, or run `cargo build --examples`",
        path.display()
    );
    path
}

/// Runs an example with `args` (in a scratch directory, with no jobyard variables), and fails
/// with its output when it exits non-zero or runs past the deadline.
fn run(name: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example(name))
        .args(args)
        .current_dir(dir.path())
        .env_remove("REDIS_URL")
        .env("JOBYARD_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_embed_example_fans_in_over_typed_results() {
    let out = run("embed", &[]);
    assert!(out.contains("fetched 11 items in all"), "{out}");
}

#[test]
fn the_axum_service_serves_jobs_from_plain_tokio() {
    let out = run("axum_service", &["--self-test"]);
    assert!(out.contains("self-test passed"), "{out}");
}

#[cfg(feature = "server")]
#[test]
fn the_actix_service_mounts_the_api_beside_its_own_routes() {
    let out = run("actix_service", &["--self-test"]);
    assert!(out.contains("self-test passed"), "{out}");
}
