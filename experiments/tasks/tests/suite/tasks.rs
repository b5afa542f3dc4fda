//! The task layer: every shipped config and preset resolves and validates;
//! bad settings are errors naming the key; every model family trains
//! through the one generic path and its loss falls on repeated batches.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn_ndarray::NdArray;
use combiner_data::retrieval::RetrievalPair;
use combiner_data::TokenSequence;
use combiner_models::image_ar::{ImageArConfig, START};
use combiner_models::lm::LmConfig;
use combiner_models::lra::{LraConfig, Pooling};
use combiner_models::mlm::MlmConfig;
use combiner_nn::TrunkConfig;
use combiner_tasks::config::TrainSettings;
use combiner_tasks::family::{self, Data, FitPlan, Prepared};
use combiner_tasks::text::TextCodec;
use combiner_tasks::{load_config, Task};
use combiner_train::FitOptions;

type B = NdArray<f32>;

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["image", "lra", "text"] {
        for e in std::fs::read_dir(experiments().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_task_has_a_config_with_smoke_small_and_paper_presets_that_validate() {
    let mut kinds = Vec::new();
    for path in configs() {
        let presets = combiner_tasks::config::presets_of(&path).unwrap();
        for p in ["smoke", "small", "paper"] {
            assert!(
                presets.iter().any(|x| x == p),
                "{} has no preset {p}",
                path.display()
            );
        }
        for p in &presets {
            let cfg = load_config(&path, Some(p))
                .unwrap_or_else(|e| panic!("{} preset {p}: {e:#}", path.display()));
            kinds.push(cfg.task.name());
        }
    }
    for k in Task::KINDS {
        assert!(kinds.contains(&k), "no config trains task `{k}`");
    }
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const BASE: &str = r#"
[task]
kind = "listops"
train_size = 8
valid_size = 4
generator = { max_depth = 2, max_args = 3, min_length = 5, max_length = 30, seq_len = 32 }
[trunk]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
attention = { kind = "combiner", plan = { kind = "fixed" } }
[train]
steps = 4
batch_size = 2
lr = 1e-3
checkpoint_every = 2
"#;

fn error_of(over: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut text = BASE.to_string();
    for (from, to) in over {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = write(dir.path(), &text);
    format!("{:#}", load_config(&path, None).unwrap_err())
}

#[test]
fn bad_settings_are_errors_naming_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    load_config(&write(dir.path(), BASE), None).expect("the base is valid");
    /// (replacements in the base config, words the error must contain)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("n_heads = 2", "n_heads = 0")], &["trunk.n_heads", "0"]),
        (&[("n_layers = 1", "n_layers = 0")], &["trunk.n_layers"]),
        (
            &[("d_model = 16", "d_model = 15")],
            &["trunk.d_model = 15", "n_heads = 2"],
        ),
        (&[("lr = 1e-3", "lr = nan")], &["train.lr", "NaN"]),
        (&[("lr = 1e-3", "lr = -1.0")], &["train.lr", "-1"]),
        (
            &[("steps = 4", "steps = 4\nwarmup = 9")],
            &["train.warmup = 9", "train.steps = 4"],
        ),
        (
            &[("batch_size = 2", "batch_size = 0")],
            &["train.batch_size"],
        ),
        (
            &[("train_size = 8", "train_size = 0")],
            &["task.train_size"],
        ),
        (
            &[(
                "plan = { kind = \"fixed\" }",
                "plan = { kind = \"axial_rowmajor\", grid = { rows = 4, cols = 4 } }",
            )],
            &["trunk.attention.plan", "32"],
        ),
        (
            &[("kind = \"listops\"", "kind = \"listops2\"")],
            &["listops2"],
        ),
        (&[("d_ff = 32", "d_ff = 32\nwidth = 3")], &["width"]),
    ];
    for (over, needles) in cases {
        let e = error_of(over);
        assert!(e.contains("run.toml"), "{e}");
        for n in *needles {
            assert!(e.contains(n), "`{n}` missing from: {e}");
        }
    }
    // a bidirectional-only attention in a causal task
    let lm = r#"
[task]
kind = "lm"
corpus = { kind = "wikipedia" }
seq_len = 64
tokenizer = { kind = "bytes" }
[trunk]
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 32
attention = { kind = "linformer" }
[train]
steps = 4
batch_size = 2
lr = 1e-3
checkpoint_every = 2
"#;
    let e = format!(
        "{:#}",
        load_config(&write(dir.path(), lm), None).unwrap_err()
    );
    assert!(
        e.contains("trunk.attention") && e.contains("linformer") && e.contains("LM"),
        "{e}"
    );
}

fn trunk() -> TrunkConfig {
    TrunkConfig {
        d_model: 32,
        n_heads: 2,
        n_layers: 1,
        d_ff: 64,
        dropout: 0.0,
        attention_dropout: 0.0,
        attention: combiner_attention::AttentionConfig::default(),
    }
}

/// Trains `prepared` for 30 steps on two repeated batches and returns the losses.
fn losses(prepared: Prepared, lr: f64) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let settings = TrainSettings {
        steps: 30,
        batch_size: 2,
        grad_accumulation: 1,
        lr,
        warmup: 0,
        final_lr_fraction: 1.0,
        schedule: Default::default(),
        weight_decay: 0.0,
        grad_clip: None,
        checkpoint_every: 30,
        keep_checkpoints: 1,
        seed: 0,
        precision: Default::default(),
    };
    let objective = prepared.objective();
    let plan = FitPlan {
        settings,
        devices: vec![Default::default()],
        opts: FitOptions {
            run_dir: dir.path().to_path_buf(),
            steps: 30,
            checkpoint_every: 30,
            keep_checkpoints: 1,
            grad_accumulation: 1,
            batch_size: 2,
            resume: false,
            stop_after: None,
            objective,
            dashboard: false,
            compute_dtype: None,
        },
    };
    let report = family::train::<Autodiff<B>>(prepared, plan).expect("training runs");
    report.losses.iter().map(|l| l.1).collect()
}

fn assert_falls(name: &str, l: &[f64], factor: f64) {
    let first = l[..2].iter().sum::<f64>() / 2.0;
    let last = l[l.len() - 2..].iter().sum::<f64>() / 2.0;
    assert!(
        last < first * factor,
        "{name}: loss {first:.4} -> {last:.4} did not fall below {factor} x"
    );
}

fn seq(tokens: Vec<u32>, label: u32) -> TokenSequence {
    TokenSequence { tokens, label }
}

#[test]
fn classifier_family_loss_falls_on_repeated_batches() {
    let items = vec![
        seq(vec![3, 4, 5, 6, 7, 8, 0, 0], 0),
        seq(vec![9, 8, 7, 6, 0, 0, 0, 0], 1),
    ];
    let model = LraConfig {
        trunk: trunk(),
        vocab_size: 16,
        max_len: 8,
        classes: 2,
        pooling: Pooling::Mean,
        pad_token: 0,
    };
    let l = losses(
        Prepared::Classifier {
            model,
            data: Data::new(items.clone(), items),
            seq_len: 8,
        },
        3e-3,
    );
    assert_falls("classifier", &l, 0.3);
}

#[test]
fn pair_family_loss_falls_on_repeated_batches() {
    let pair = |a: Vec<u32>, b: Vec<u32>, label| RetrievalPair { a, b, label };
    let items = vec![
        pair(vec![5, 6, 7, 8], vec![5, 6, 7, 8], 1),
        pair(vec![5, 6, 7, 8], vec![9, 10, 11, 12], 0),
    ];
    let model = LraConfig {
        trunk: trunk(),
        vocab_size: 16,
        max_len: 4,
        classes: 2,
        pooling: Pooling::Cls,
        pad_token: 0,
    };
    let l = losses(
        Prepared::Pairs {
            model,
            data: Data::new(items.clone(), items),
            seq_len: 4,
        },
        3e-3,
    );
    assert_falls("pairs", &l, 0.3);
}

#[test]
fn lm_family_loss_falls_on_repeated_batches() {
    let text = TextCodec::Bytes;
    let items: Vec<_> = [
        "the cat sat on the mat, on the mat.",
        "a dog ran in the fog, in the fog!!",
    ]
    .iter()
    .map(|s| seq(text.encode(s).unwrap()[..17].to_vec(), 0))
    .collect();
    let model = LmConfig {
        trunk: trunk(),
        vocab_size: text.vocab_size(),
        max_len: 16,
    };
    let l = losses(
        Prepared::Lm {
            model,
            data: Data::new(items.clone(), items),
            text,
        },
        3e-3,
    );
    assert_falls("lm", &l, 0.5);
}

#[test]
fn mlm_family_loss_falls_on_repeated_batches() {
    let text = TextCodec::Bytes;
    let items: Vec<_> = [
        "abababababababababababababababab",
        "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
    ]
    .iter()
    .map(|s| seq(text.encode(s).unwrap(), 0))
    .collect();
    let model = MlmConfig {
        trunk: trunk(),
        vocab_size: text.vocab_size(),
        max_len: 32,
    };
    let masking = text.masking(0.3);
    let l = losses(
        Prepared::Mlm {
            model,
            data: Data::new(items.clone(), items),
            text,
            masking,
        },
        3e-3,
    );
    // masks change every batch: compare means of the first and last five steps
    let first = l[..5].iter().sum::<f64>() / 5.0;
    let last = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.5 * first, "mlm: {first:.4} -> {last:.4}");
}

#[test]
fn image_family_loss_falls_on_repeated_batches() {
    let image = |k: u32| {
        seq(
            std::iter::once(START)
                .chain((0..48).map(|i| (i * 5 + k * 100) % 256))
                .collect(),
            0,
        )
    };
    let items = vec![image(0), image(1)];
    let model = ImageArConfig {
        trunk: trunk(),
        height: 4,
        width: 4,
        channels: 3,
    };
    let l = losses(
        Prepared::Image {
            model,
            data: Data::new(items.clone(), items),
        },
        3e-3,
    );
    assert_falls("image", &l, 0.5);
}

#[test]
fn every_table_resolves_every_cell_at_every_preset() {
    let root = experiments().join("..");
    for name in ["table1", "table2", "table3", "table5", "table6"] {
        let path = root.join("experiments").join(name).join("table.toml");
        let table = combiner_tasks::table::load_table(path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(table.name, name);
        for preset in ["smoke", "small", "paper"] {
            let cells = table
                .cells(preset, Path::new("runs"), None, None)
                .unwrap_or_else(|e| panic!("{name} preset {preset}: {e:#}"));
            // every row appears in every column it does not exclude
            let expected: usize = table
                .def
                .rows
                .iter()
                .map(|r| r.only.as_ref().map_or(table.def.columns.len(), Vec::len))
                .sum();
            assert_eq!(cells.len(), expected, "{name} {preset}");
            for c in &cells {
                let row = table.def.rows.iter().find(|r| r.name == c.row).unwrap();
                assert_eq!(
                    toml::Value::try_from(&c.cfg.trunk.attention)
                        .unwrap()
                        .get("kind"),
                    row.attention.get("kind"),
                    "{name} {preset} {}: the row's attention is the cell's",
                    c.row
                );
            }
        }
    }
}

#[test]
fn a_table_with_an_unknown_column_or_row_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = experiments().join("lra/listops.toml");
    let table = |rows: &str| {
        let p = dir.path().join("t.toml");
        std::fs::write(
            &p,
            format!(
                "title = \"t\"\nmetric = \"accuracy\"\n[[columns]]\nname = \"a\"\nconfig = {:?}\n{rows}",
                cfg.to_str().unwrap()
            ),
        )
        .unwrap();
        combiner_tasks::table::load_table(p.to_str().unwrap())
    };
    let ok = table("[[rows]]\nname = \"X\"\nattention = { kind = \"vanilla\" }\n").unwrap();
    let err = ok
        .cells("smoke", Path::new("runs"), Some(&["nope".into()]), None)
        .unwrap_err();
    assert!(format!("{err:#}").contains("no row `nope`"), "{err:#}");
    let err =
        table("[[rows]]\nname = \"X\"\nattention = { kind = \"vanilla\" }\npaper = { b = 1.0 }\n")
            .unwrap_err();
    assert!(
        format!("{err:#}").contains("paper.b is not a column"),
        "{err:#}"
    );
    let err = table("[[rows]]\nname = \"X\"\nattention = { kind = \"vanilla\" }\nversus = \"Y\"\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("versus = \"Y\" is not a row"),
        "{err:#}"
    );
    let bad = table("[[rows]]\nname = \"X\"\nattention = { kind = \"warp\" }\n").unwrap();
    let err = bad
        .cells("smoke", Path::new("runs"), None, None)
        .unwrap_err();
    assert!(format!("{err:#}").contains("row `X`"), "{err:#}");
}
