//! What happens when a run is stopped: SIGTERM (as Ctrl-C) finishes the
//! step in flight, checkpoints, prints how to resume and exits non-zero;
//! SIGKILL at any point loses at most the steps after the last checkpoint,
//! and the resumed run's history holds every step once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::command;

const CONFIG: &str = r#"
[task]
kind = "listops"
train_size = 64
valid_size = 8
generator = { max_depth = 3, max_args = 3, min_length = 5, max_length = 40, seq_len = 48 }
[trunk]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
attention = { kind = "combiner", plan = { kind = "fixed" } }
[train]
steps = 100000
batch_size = 4
lr = 1e-3
checkpoint_every = 7
"#;

/// A temporary directory holding the long-running config; `(dir, config, run dir)`.
fn long_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = tmp.path().join("run");
    (tmp, cfg, run)
}

/// [`long_run`] trained to its first checkpoint (step 7).
fn checkpointed_at_7() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, cfg, run) = long_run();
    let (ok, text) = output(start(&cfg, &run, &["--stop-after", "7"]));
    assert!(ok, "{text}");
    (tmp, cfg, run)
}

fn start(cfg: &Path, run: &Path, extra: &[&str]) -> Child {
    start_with(cfg, run, extra, &[])
}

fn start_with(cfg: &Path, run: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    command()
        .envs(env.iter().copied())
        .args(["train", "--plain", "--config"])
        .arg(cfg)
        .arg("--run-dir")
        .arg(run)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start combiner")
}

/// Steps recorded in `metrics.jsonl`.
fn steps(run: &Path) -> Vec<usize> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["step"].as_u64().map(|s| s as usize)
        })
        .collect()
}

fn wait_for_steps(run: &Path, n: usize) {
    let t0 = Instant::now();
    while steps(run).len() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

fn output(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn sigterm_checkpoints_the_step_in_flight_and_says_how_to_resume() {
    let (_tmp, cfg, run) = long_run();
    let child = start(&cfg, &run, &[]);
    wait_for_steps(&run, 10);
    signal(&child, "-TERM");
    let (ok, text) = output(child);
    assert!(!ok, "an interrupted run exits non-zero:\n{text}");
    assert!(
        text.contains("interrupted") && text.contains("resume with") && text.contains("--resume"),
        "{text}"
    );
    let recorded = steps(&run);
    let last = *recorded.last().unwrap();
    // the last recorded step has a complete checkpoint
    let state = run.join("checkpoints").join(format!("state-{last}.json"));
    assert!(state.exists(), "no checkpoint of step {last}:\n{text}");
    // resume continues from it; every step appears once
    let child = start(&cfg, &run, &["--resume", "--stop-after", "3"]);
    let (ok, text) = output(child);
    assert!(ok, "{text}");
    let all = steps(&run);
    assert_eq!(all, (1..=last + 3).collect::<Vec<_>>(), "{text}");
}

#[test]
fn sigkill_at_any_point_resumes_with_every_step_once() {
    let (_tmp, cfg, run) = long_run();
    // kill three times at different points (before and after checkpoints,
    // possibly while one is being written), resuming in between
    for (round, wait) in [9usize, 5, 12].into_iter().enumerate() {
        let extra: &[&str] = if round == 0 { &[] } else { &["--resume"] };
        let before = steps(&run).len();
        let child = start(&cfg, &run, extra);
        wait_for_steps(&run, before + wait);
        signal(&child, "-KILL");
        let _ = output(child);
    }
    let child = start(&cfg, &run, &["--resume", "--stop-after", "2"]);
    let (ok, text) = output(child);
    assert!(ok, "{text}");
    let all = steps(&run);
    let n = all.len();
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "every step once, in order:\n{text}"
    );
}

/// Files of `run/checkpoints/.partial/` (parts being written).
fn partial(run: &Path) -> Vec<String> {
    std::fs::read_dir(run.join("checkpoints").join(".partial"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigkill_while_a_checkpoint_is_written_resumes_from_the_one_before() {
    let (_tmp, cfg, run) = checkpointed_at_7();
    // every checkpoint part now waits 60 s in .partial/ before its rename
    let child = start_with(
        &cfg,
        &run,
        &["--resume"],
        &[("COMBINER_FAULT_CHECKPOINT_PAUSE_MS", "60000")],
    );
    let t0 = Instant::now();
    while !partial(&run).iter().any(|f| f.contains("-14.")) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-KILL");
    let _ = output(child);
    let ckpt = run.join("checkpoints");
    assert!(
        !ckpt.join("model-14.mpk").exists(),
        "the killed write reached checkpoints/"
    );
    assert!(ckpt.join("model-7.mpk").exists() && ckpt.join("state-7.json").exists());
    let (ok, text) = output(start(&cfg, &run, &["--resume", "--stop-after", "3"]));
    assert!(ok, "{text}");
    assert!(text.contains("step 7"), "resumes from step 7:\n{text}");
    assert_eq!(steps(&run), (1..=10).collect::<Vec<_>>(), "{text}");
    assert!(partial(&run).is_empty(), "half-written parts left behind");
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_one_before() {
    let (_tmp, cfg, run) = checkpointed_at_7();
    // the place of step 14's model file is taken: its rename fails
    let blocked = run.join("checkpoints").join("model-14.mpk");
    std::fs::create_dir(&blocked).unwrap();
    let (ok, text) = output(start(&cfg, &run, &["--resume", "--stop-after", "7"]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot write a checkpoint")
            && text.contains("model-14.mpk")
            && text.contains("last good checkpoint is step 7"),
        "{text}"
    );
    assert!(run.join("checkpoints").join("model-7.mpk").exists());
    // once the way is clear the run goes on from step 7
    std::fs::remove_dir(&blocked).unwrap();
    let (ok, text) = output(start(&cfg, &run, &["--resume", "--stop-after", "8"]));
    assert!(ok, "{text}");
    assert_eq!(steps(&run), (1..=15).collect::<Vec<_>>(), "{text}");
}

#[test]
fn a_full_disk_is_an_error_naming_the_file_and_keeps_the_checkpoint_before() {
    let (_tmp, cfg, run) = checkpointed_at_7();
    // step 14's state file is written through /dev/full: ENOSPC, as on a full disk
    let ckpt = run.join("checkpoints");
    std::os::unix::fs::symlink("/dev/full", ckpt.join("state-14.json.tmp")).unwrap();
    let (ok, text) = output(start(&cfg, &run, &["--resume", "--stop-after", "7"]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("state-14.json") && text.contains("No space left on device"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(ckpt.join("model-7.mpk").is_file() && ckpt.join("state-7.json").is_file());
    std::fs::remove_file(ckpt.join("state-14.json.tmp")).unwrap();
    let (ok, text) = output(start(&cfg, &run, &["--resume", "--stop-after", "1"]));
    assert!(ok, "{text}");
    assert_eq!(steps(&run), (1..=8).collect::<Vec<_>>(), "{text}");
}

#[test]
fn a_run_directory_that_cannot_be_created_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (ok, text) = output(start(&cfg, &file.join("run"), &["--stop-after", "5"]));
    assert!(!ok, "{text}");
    assert!(
        text.contains("a-file") && !text.contains("panicked"),
        "{text}"
    );
}
