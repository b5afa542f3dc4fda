//! What happens when a run is stopped: SIGTERM (as Ctrl-C) finishes the
//! step in flight, checkpoints, prints how to resume and exits non-zero;
//! SIGKILL at any point loses at most the steps after the last checkpoint,
//! and the resumed run's history holds every step once.

use std::path::Path;
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

fn start(cfg: &Path, run: &Path, extra: &[&str]) -> Child {
    command()
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
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = tmp.path().join("run");
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
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("long.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let run = tmp.path().join("run");
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
