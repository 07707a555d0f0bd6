//! The browser client's own suites (clients/js), run against this build's demo binary: its
//! unit tests under node's test runner, and the demo page end to end in headless Chromium.
//! The project's scripts install what they need: the npm packages from the lockfile
//! (scripts/ensure-js) and Debian's chromium (scripts/ensure-chromium).

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ lives in the repository")
}

fn client_dir() -> PathBuf {
    repository().join("clients/js")
}

/// Runs one of the project's scripts, failing the test with what it said when it fails.
fn script(name: &str) -> String {
    let path = repository().join("scripts").join(name);
    let output = Command::new(&path)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", path.display()));
    assert!(
        output.status.success(),
        "scripts/{name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The npm packages, installed once for both suites of this binary.
fn packages() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        script("ensure-js");
    });
}

fn npm(task: &str, extra_env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new("npm");
    command
        .args(["run", "--silent", task])
        .current_dir(client_dir())
        .env("WSE_DEMO_BIN", env!("CARGO_BIN_EXE_demo"));
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run npm: {error}"))
}

fn assert_passed(suite: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{suite} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_client_unit_tests_pass_against_the_demo() {
    packages();
    assert_passed("clients/js unit tests (npm test)", &npm("test", &[]));
}

#[test]
fn the_demo_page_works_in_chromium() {
    packages();
    let chromium = PathBuf::from(script("ensure-chromium"));
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    let output = npm(
        "test:e2e",
        &[("CHROMIUM", &chromium), ("WSE_ARTIFACTS", &artifacts)],
    );
    assert_passed("clients/js end-to-end tests (npm run test:e2e)", &output);
    for screenshot in ["demo-page.png", "demo-page-phone.png"] {
        let saved = artifacts.join(screenshot);
        assert!(saved.is_file(), "no screenshot at {}", saved.display());
    }
}
