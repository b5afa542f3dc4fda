//! Every task of the paper end to end on the CPU: `combiner train --preset
//! smoke` (data prepared from the shipped archives into a temporary folder),
//! then `combiner eval` prints the task's metric and `combiner sample`
//! produces the family's samples. Without the shipped data these tests print
//! a skip notice, except under `CI=true`, where they fail.

use std::path::Path;
use std::sync::OnceLock;

use super::common::{ok_text as ok, shared_archive};

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
        let mut archives = Vec::new();
        for (name, archive) in needed {
            archives.push((name, shared_archive("task smoke tests", archive)?));
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        for (name, from) in archives {
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

/// `combiner table <t> --preset smoke` trains every cell, writes results
/// whose numbers are the last validation of each cell's own run, and a
/// second invocation trains nothing (finished cells are skipped). Table 1
/// runs its CIFAR-10 column only: ImageNet-64's 12,288-long sequences take
/// minutes per row on the CPU (the task's own smoke test covers them).
#[test]
fn every_table_smoke_writes_results_from_its_runs() {
    let Some(d) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for (table, metric, columns) in [
        ("table1", "bits/dim", "cifar10"),
        ("table2", "perplexity", "2k,8k"),
        ("table3", "perplexity", "8k"),
        (
            "table5",
            "accuracy",
            "listops,text,retrieval,image,pathfinder",
        ),
        ("table6", "perplexity", "2k,8k"),
    ] {
        let results = tmp.path().join("results").join(table);
        let args = [
            "table",
            table,
            "--preset",
            "smoke",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--results-dir",
            results.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
            "--devices",
            "0,0",
            "--columns",
            columns,
        ];
        let first = ok(&args);
        assert!(first.contains("cells have a result"), "{first}");
        let csv = std::fs::read_to_string(results.join("results.csv")).unwrap();
        let md = std::fs::read_to_string(results.join("results.md")).unwrap();
        assert!(
            results.join("curves.png").is_file(),
            "{table}: no curves.png"
        );
        let lines: Vec<&str> = csv.lines().skip(1).collect();
        assert!(!lines.is_empty(), "{table}: empty results.csv");
        for line in &lines {
            // table,preset,"column","row",metric,ours,paper,...
            let f: Vec<&str> = line.split(',').collect();
            let (column, row) = (f[2].trim_matches('"'), f[3].trim_matches('"'));
            let dir = Path::new(f.last().unwrap().trim_matches('"'));
            assert!(dir.starts_with(&runs), "{table}: {line}");
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                    .unwrap();
            let last = report["valid"].as_array().unwrap().last().unwrap()[metric]
                .as_f64()
                .unwrap();
            let shown = if metric == "accuracy" {
                format!("{:.2}", 100.0 * last)
            } else {
                format!("{last:.3}")
            };
            assert_eq!(f[4], metric, "{table}: {line}");
            assert_eq!(
                f[5], shown,
                "{table} {column}/{row}: results.csv is not its run's"
            );
            assert!(
                md.contains(&format!("| {row} |")),
                "{table}: row {row} missing"
            );
        }
        let again = ok(&args);
        assert_eq!(
            again.matches("done already, skipped").count(),
            lines.len(),
            "{table}: a finished table trains again:\n{again}"
        );
        if table == "table2" {
            // a run killed before its report: the report says where it stopped
            let first = lines[0].split(',').next_back().unwrap().trim_matches('"');
            let dir = Path::new(first);
            std::fs::remove_file(dir.join("report.json")).unwrap();
            let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
            let kept: Vec<&str> = log.lines().take(5).collect();
            std::fs::write(dir.join("metrics.jsonl"), kept.join("\n") + "\n").unwrap();
            let mut only = args.to_vec();
            only.push("--report-only");
            ok(&only);
            let md = std::fs::read_to_string(results.join("results.md")).unwrap();
            assert!(md.contains("| stopped at step 5 of "), "{md}");
        }
    }
}
