//! `combiner train | eval | sample` end to end on the smoke preset (CPU).

use std::path::Path;

use super::common::{combiner, text};

const LISTOPS: &str = "experiments/lra/listops.toml";

#[test]
fn listops_smoke_trains_resumes_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    let first = combiner(&[
        "train",
        "--config",
        LISTOPS,
        "--preset",
        "smoke",
        "--run-dir",
        run_s,
        "--plain",
        "--stop-after",
        "10",
    ]);
    assert!(first.status.success(), "{}", text(&first));
    for f in ["config.toml", "run.txt", "metrics.jsonl", "report.json"] {
        assert!(run.join(f).exists(), "{f} missing in the run directory");
    }
    let info = std::fs::read_to_string(run.join("run.txt")).unwrap();
    assert!(
        info.contains("commit:")
            && info.contains("backend: ndarray")
            && info.contains("--preset smoke"),
        "{info}"
    );

    let refused = combiner(&[
        "train",
        "--config",
        LISTOPS,
        "--preset",
        "smoke",
        "--run-dir",
        run_s,
        "--plain",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("pass --resume"),
        "{}",
        text(&refused)
    );

    let other_preset = combiner(&[
        "train",
        "--config",
        LISTOPS,
        "--preset",
        "small",
        "--run-dir",
        run_s,
        "--resume",
        "--plain",
    ]);
    assert!(
        !other_preset.status.success(),
        "resuming with another config must fail"
    );

    let resumed = combiner(&[
        "train",
        "--config",
        LISTOPS,
        "--preset",
        "smoke",
        "--run-dir",
        run_s,
        "--resume",
        "--plain",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed).contains("finished at step 20 of 20"),
        "{}",
        text(&resumed)
    );
    let steps: Vec<usize> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    assert_eq!(
        steps,
        (1..=20).collect::<Vec<_>>(),
        "one log line per step across both invocations"
    );

    let eval = combiner(&["eval", "--run-dir", run_s]);
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(
        text(&eval).contains("step 20") && text(&eval).contains("accuracy"),
        "{}",
        text(&eval)
    );

    // a classifier's samples are its predictions on validation examples
    let sample = combiner(&["sample", "--run-dir", run_s, "--count", "3"]);
    assert!(sample.status.success(), "{}", text(&sample));
    assert_eq!(
        text(&sample).matches("predicted").count(),
        4,
        "a header and three examples: {}",
        text(&sample)
    );
}

#[test]
fn bad_configs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../")
            .join(LISTOPS),
    )
    .unwrap();
    std::fs::write(
        &bad,
        base.replace(
            "checkpoint_every = 500",
            "checkpoint_every = 500\nlearning_rate = 1.0",
        ),
    )
    .unwrap();
    let out = combiner(&[
        "train",
        "--config",
        bad.to_str().unwrap(),
        "--run-dir",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("bad.toml") && t.contains("learning_rate"), "{t}");

    let out = combiner(&[
        "train",
        "--config",
        LISTOPS,
        "--preset",
        "huge",
        "--run-dir",
        tmp.path().join("r2").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no preset `huge`") && text(&out).contains("smoke"),
        "{}",
        text(&out)
    );

    let out = combiner(&["train", "--config", "missing.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("missing.toml"), "{}", text(&out));
}

#[test]
fn mixed_precision_on_a_backend_without_it_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bf16.toml");
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../")
            .join(LISTOPS),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        base.replace(
            "checkpoint_every = 500",
            "checkpoint_every = 500\nprecision = \"bf16\"",
        ),
    )
    .unwrap();
    let run = tmp.path().join("r");
    let out = combiner(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--preset",
        "smoke",
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("bf16.toml") && t.contains("train.precision") && t.contains("--backend tch"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");

    std::fs::write(
        &cfg,
        base.replace(
            "checkpoint_every = 500",
            "checkpoint_every = 500\nprecision = \"fp8\"",
        ),
    )
    .unwrap();
    let out = combiner(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("precision") && t.contains("bf16"), "{t}");
}
