//! Every task of the paper end to end on the CPU: `combiner train --preset
//! smoke` (data prepared from the shipped archives into a temporary folder),
//! then `combiner eval` prints the task's metric and `combiner sample`
//! produces the family's samples. Without the shipped data these tests print
//! a skip notice, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn combiner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_combiner"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run combiner")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = combiner(args);
    assert!(
        o.status.success(),
        "combiner {args:?} failed:\n{}",
        text(&o)
    );
    text(&o)
}

fn shared_dir() -> PathBuf {
    std::env::var_os("COMBINER_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// The datasets the smoke presets read, prepared once for all tests here.
/// `None` (after a skip notice) without the shipped data; a failure under CI=true.
fn data_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| {
        let needed = [
            ("cifar10", "cifar10-jpeg.tar.xz"),
            ("imdb", "imdb.tar.xz"),
            ("wikipedia", "wikipedia-en-aa.tar.xz"),
            (
                "tiny-imagenet-train",
                "tiny-imagenet-64-train-subset.tar.xz",
            ),
            ("tiny-imagenet-val", "tiny-imagenet-64-val.tar.xz"),
        ];
        let shared = shared_dir();
        if let Some((_, missing)) = needed.iter().find(|(_, a)| !shared.join(a).is_file()) {
            let path = shared.join(missing);
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "the shipped archive {} is missing, and CI=true requires it \
                     (set COMBINER_SHARED_DATA to the folder holding the shared data archives)",
                    path.display()
                );
            }
            eprintln!("SKIPPED task smoke tests: {} not found", path.display());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (name, archive) in needed {
            let from = shared.join(archive);
            ok(&[
                "data",
                "prepare",
                name,
                "--from",
                from.to_str().unwrap(),
                "--data-dir",
                d,
            ]);
        }
        Some(dir)
    })
    .as_ref()
    .map(|d| d.path())
}

/// Trains the smoke preset of `config`, evaluates and (with `sample`)
/// samples it; returns (train output, eval output, sample output). Image
/// sampling (one forward pass per sub-pixel) is covered by the model tests.
fn smoke_with(config: &str, data: &Path, sample: bool) -> (String, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    let trained = ok(&[
        "train",
        "--config",
        config,
        "--preset",
        "smoke",
        "--run-dir",
        run_s,
        "--data-dir",
        data_s,
        "--plain",
    ]);
    for f in ["config.toml", "run.txt", "metrics.jsonl", "report.json"] {
        assert!(
            run.join(f).exists(),
            "{config}: {f} missing in the run directory"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let valid = report["valid"]
        .as_array()
        .expect("validations in report.json");
    assert!(!valid.is_empty(), "{config}: {report}");
    let eval = ok(&["eval", "--run-dir", run_s, "--data-dir", data_s]);
    if !sample {
        return (trained, eval, String::new());
    }
    let png = tmp.path().join("samples.png");
    let sample = ok(&[
        "sample",
        "--run-dir",
        run_s,
        "--data-dir",
        data_s,
        "--count",
        "2",
        "--tokens",
        "8",
        "--out",
        png.to_str().unwrap(),
    ]);
    (trained, eval, sample)
}

fn smoke(config: &str, data: &Path) -> (String, String, String) {
    smoke_with(config, data, true)
}

fn metric_in_report(config: &str, data: &Path, metric: &str) {
    let (trained, eval, _) = smoke_with(config, data, false);
    assert!(
        trained.contains(metric),
        "{config}: no {metric} in\n{trained}"
    );
    assert!(eval.contains(metric), "{config}: no {metric} in\n{eval}");
}

#[test]
fn cifar10_smoke_trains() {
    let Some(d) = data_dir() else { return };
    metric_in_report("experiments/image/cifar10.toml", d, "bits/dim");
}

#[test]
fn imagenet64_smoke_trains() {
    let Some(d) = data_dir() else { return };
    metric_in_report("experiments/image/imagenet64.toml", d, "bits/dim");
}

#[test]
fn lm_smoke_trains_its_tokenizer_and_samples_text() {
    let Some(d) = data_dir() else { return };
    let (trained, eval, sample) = smoke("experiments/text/lm.toml", d);
    assert!(trained.contains("tokenizer trained"), "{trained}");
    assert!(
        trained.contains("perplexity") && eval.contains("perplexity"),
        "{eval}"
    );
    assert!(
        sample.contains("[prompt]") && sample.contains("[model]"),
        "{sample}"
    );
}

#[test]
fn mlm_smoke_trains_and_fills_masks() {
    let Some(d) = data_dir() else { return };
    let (trained, eval, sample) = smoke("experiments/text/mlm.toml", d);
    assert!(
        trained.contains("perplexity") && eval.contains("perplexity"),
        "{eval}"
    );
    assert!(sample.contains("masked tokens recovered"), "{sample}");
}

#[test]
fn lra_text_smoke_trains() {
    let Some(d) = data_dir() else { return };
    metric_in_report("experiments/lra/text.toml", d, "accuracy");
}

#[test]
fn lra_retrieval_smoke_trains_the_dual_encoder() {
    let Some(d) = data_dir() else { return };
    let (trained, _, sample) = smoke("experiments/lra/retrieval.toml", d);
    assert!(trained.contains("accuracy"), "{trained}");
    assert!(sample.contains("1 = match"), "{sample}");
}

#[test]
fn lra_image_smoke_trains() {
    let Some(d) = data_dir() else { return };
    metric_in_report("experiments/lra/image.toml", d, "accuracy");
}

#[test]
fn pathfinder_smoke_trains_and_shows_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let (trained, eval, sample) = smoke("experiments/lra/pathfinder.toml", tmp.path());
    assert!(
        trained.contains("accuracy") && eval.contains("accuracy"),
        "{eval}"
    );
    assert!(sample.contains("predicted"), "{sample}");
}
