//! Running the `combiner` binary from the tests, and finding the shipped data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: every command runs there, so configs read
/// `experiments/...`.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The binary with a clean environment (no backtraces in messages, no
/// `COMBINER_DATA` from the caller), run in [`root`].
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_combiner"));
    cmd.current_dir(root())
        .env_remove("RUST_BACKTRACE")
        .env_remove("COMBINER_DATA");
    cmd
}

/// Runs `combiner args` with extra environment variables.
pub fn combiner_with(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the combiner binary runs")
}

/// Runs `combiner args`.
pub fn combiner(args: &[&str]) -> Output {
    combiner_with(args, &[])
}

/// Stdout of a finished command.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout and stderr together.
pub fn text(o: &Output) -> String {
    stdout(o) + &stderr(o)
}

/// Runs a command that must succeed (else fails the test with both streams);
/// returns its stdout.
pub fn ok_with(args: &[&str], envs: &[(&str, &Path)]) -> String {
    let out = combiner_with(args, envs);
    assert!(
        out.status.success(),
        "combiner {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a command that must succeed; returns stdout and stderr together
/// (training reports its progress on stderr).
pub fn ok_text(args: &[&str]) -> String {
    let out = combiner(args);
    assert!(
        out.status.success(),
        "combiner {args:?} failed:\n{}",
        text(&out)
    );
    text(&out)
}

/// [`ok_with`] without extra environment.
pub fn ok(args: &[&str]) -> String {
    ok_with(args, &[])
}

/// Runs a command that must fail; returns stdout and stderr together.
pub fn fails_with(args: &[&str], envs: &[(&str, &Path)]) -> String {
    let out = combiner_with(args, envs);
    assert!(
        !out.status.success(),
        "combiner {args:?} should fail\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    text(&out)
}

/// [`fails_with`] without extra environment.
pub fn fails(args: &[&str]) -> String {
    fails_with(args, &[])
}

/// The folder of shipped data archives: `$COMBINER_SHARED_DATA`, else
/// `<repo>/../shared/data`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("COMBINER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"))
}

/// The shipped `archive` if present; `None` (after a skip notice naming
/// `test`) when it is not, and a failure when it is not under `CI=true`.
pub fn shared_archive(test: &str, archive: &str) -> Option<PathBuf> {
    let path = shared_dir().join(archive);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: the shipped archive {} is missing, and CI=true requires it \
             (set COMBINER_SHARED_DATA to the folder holding the shared data archives)",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {} not found (set COMBINER_SHARED_DATA to the shared data folder)",
        path.display()
    );
    None
}
