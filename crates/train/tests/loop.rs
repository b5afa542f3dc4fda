//! The training loop on the CPU backend with a tiny LRA classifier: it
//! learns, resumes exactly, and stops cleanly on a NaN loss.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, InMemDataset};
use burn::optim::AdamConfig;
use burn::prelude::*;
use burn::record::DefaultRecorder;
use burn::tensor::{DType, FloatDType};
use burn_ndarray::NdArray;
use combiner::Plan;
use combiner_attention::AttentionConfig;
use combiner_data::batcher::{ClassificationBatch, ClassificationBatcher, TokenSequence};
use combiner_data::stream::EpochStream;
use combiner_models::lra::{Lra, LraConfig, Pooling};
use combiner_nn::{Objective, TrunkConfig};
use combiner_train::{fit, FitOptions, FitReport, TrainError, WarmupDecay};

type B = Autodiff<NdArray<f32>>;
type IB = NdArray<f32>;

const SEQ: usize = 24;

/// Two fixed batches of 4: class 1 sequences carry token 3 in a few places.
fn items() -> InMemDataset<TokenSequence> {
    let mut items = Vec::new();
    for i in 0..8u32 {
        let mut tokens: Vec<u32> = (0..SEQ as u32).map(|t| 5 + (t * 7 + i * 3) % 11).collect();
        if i % 2 == 1 {
            for k in 0..4 {
                tokens[(i as usize + 5 * k) % SEQ] = 3;
            }
        }
        items.push(TokenSequence {
            tokens,
            label: i % 2,
        });
    }
    InMemDataset::new(items)
}

/// Parameter initialization draws from the device's global RNG: runs in
/// parallel test threads would interleave their draws.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(device: &burn::tensor::Device<B>) -> Lra<B> {
    B::seed(device, 42);
    LraConfig {
        trunk: TrunkConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            dropout: 0.0,
            attention_dropout: 0.0,
            attention: AttentionConfig::Combiner {
                plan: Plan::Fixed { block: None },
                abstraction: Default::default(),
            },
        },
        vocab_size: 16,
        max_len: SEQ,
        classes: 2,
        pooling: Pooling::Mean,
        pad_token: 0,
    }
    .init(device)
}

type Loaders = (
    Arc<dyn DataLoader<B, ClassificationBatch<B>>>,
    Arc<dyn DataLoader<IB, ClassificationBatch<IB>>>,
);

/// Loaders for `devices` data-parallel replicas: the same stream of items,
/// in batches of `4 / devices`.
fn loaders_split(steps: usize, devices: usize) -> Loaders {
    let batcher = ClassificationBatcher {
        seq_len: SEQ,
        pad: 0,
    };
    // as the tasks make it where reads may run on other threads
    let train = DataLoaderBuilder::<B, TokenSequence, ClassificationBatch<B>>::new(batcher.clone())
        .batch_size(4 / devices)
        .num_workers(1)
        .build(EpochStream::new(items(), steps * 4, 7));
    let valid = DataLoaderBuilder::<IB, TokenSequence, ClassificationBatch<IB>>::new(batcher)
        .batch_size(4)
        .build(items());
    (train, valid)
}

fn run(
    dir: &std::path::Path,
    steps: usize,
    lr: f64,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<FitReport, TrainError> {
    run_on(dir, steps, lr, resume, stop_after, 1)
}

fn run_on(
    dir: &std::path::Path,
    steps: usize,
    lr: f64,
    resume: bool,
    stop_after: Option<usize>,
    devices: usize,
) -> Result<FitReport, TrainError> {
    run_with(dir, steps, lr, resume, stop_after, devices, None).map(|(_, r)| r)
}

fn run_with(
    dir: &std::path::Path,
    steps: usize,
    lr: f64,
    resume: bool,
    stop_after: Option<usize>,
    devices: usize,
    compute_dtype: Option<FloatDType>,
) -> Result<(Lra<IB>, FitReport), TrainError> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // these tests run the loop with each loss read on a thread of its own
    // (as on libtorch); the binary's ndarray runs in the CLI tests read
    // them on the loop's thread
    combiner_train::allow_async_reads::<IB>();
    let device = Default::default();
    let (train, valid) = loaders_split(steps, devices);
    let opts = FitOptions {
        run_dir: dir.to_path_buf(),
        steps,
        checkpoint_every: 2,
        keep_checkpoints: 2,
        grad_accumulation: 1,
        batch_size: 4,
        resume,
        stop_after,
        objective: Objective::Classification,
        dashboard: false,
        compute_dtype,
    };
    let schedule = WarmupDecay {
        peak: lr,
        warmup: 2,
        total: steps,
        final_fraction: 0.1,
        step: 0,
        decay: Default::default(),
    };
    fit(
        model(&device),
        AdamConfig::new().init(),
        schedule,
        train,
        valid,
        DefaultRecorder::new(),
        vec![device; devices],
        opts,
    )
}

#[test]
fn stream_repeats_every_item_once_per_epoch_in_a_seeded_order() {
    let s = EpochStream::new(items(), 20, 3);
    let firsts: Vec<u32> = (0..8).map(|k| s.get(k).unwrap().tokens[0]).collect();
    let mut sorted = firsts.clone();
    sorted.sort_unstable();
    let mut all: Vec<u32> = items().iter().map(|i| i.tokens[0]).collect();
    all.sort_unstable();
    assert_eq!(sorted, all, "one epoch is a permutation of the base set");
    let again = EpochStream::new(items(), 20, 3);
    assert_eq!(s.get(13).unwrap(), again.get(13).unwrap());
    assert!(s.get(20).is_none());
}

#[test]
fn overfits_two_fixed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(dir.path(), 40, 1e-2, false, None).unwrap();
    let first = report.losses[0].1;
    let last = report.losses.iter().rev().take(4).map(|x| x.1).sum::<f64>() / 4.0;
    assert!(
        first > 0.5,
        "an untrained binary classifier starts near ln 2, got {first}"
    );
    assert!(
        last < 0.1,
        "after 40 steps on two batches the loss is below 0.1, got {last} (first {first})"
    );
    assert!(dir.path().join("metrics.jsonl").exists());
}

#[test]
fn a_killed_run_resumes_with_the_same_losses() {
    let full = tempfile::tempdir().unwrap();
    let whole = run(full.path(), 8, 1e-2, false, None).unwrap();
    let cut = tempfile::tempdir().unwrap();
    let first = run(cut.path(), 8, 1e-2, false, Some(4)).unwrap();
    assert_eq!(first.end_step, 4);
    let refused = run(cut.path(), 8, 1e-2, false, None).unwrap_err();
    assert!(
        refused.to_string().contains("already holds checkpoints"),
        "{refused}"
    );
    let second = run(cut.path(), 8, 1e-2, true, None).unwrap();
    assert_eq!(second.start_step, 4);
    let resumed: Vec<(usize, f64)> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(resumed.len(), whole.losses.len());
    for ((s1, a), (s2, b)) in whole.losses.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() < 1e-6,
            "step {s1}: uninterrupted {a} vs resumed {b}"
        );
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 20, 1e-2, false, Some(4)).unwrap();
    // resume with a learning rate that makes the weights overflow
    let err = run(dir.path(), 20, 1e30, true, None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{text}");
    if let TrainError::NonFiniteLoss { step, .. } = err {
        assert!(
            step > 4,
            "steps 1-4 ran with a sane rate, got a NaN at {step}"
        );
        let kept = combiner_train::checkpoints_of::<B, DefaultRecorder>(dir.path());
        assert!(
            kept.contains(&4) && *kept.last().unwrap() < step,
            "{kept:?} vs {step}"
        );
        assert!(
            text.contains(&format!(
                "last good checkpoint is step {}",
                kept.last().unwrap()
            )),
            "{text}"
        );
    }
}

#[test]
fn two_data_parallel_replicas_follow_the_single_device_loss_curve() {
    // ndarray has one device: two replicas on it exercise the whole
    // data-parallel path (fork, per-replica backward, gradient transfer and
    // averaging) with the same global batch of 4 split 2 + 2
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let single = run_on(one.path(), 8, 1e-2, false, None, 1).unwrap();
    let double = run_on(two.path(), 8, 1e-2, false, None, 2).unwrap();
    assert_eq!(single.losses.len(), 8);
    assert_eq!(double.losses.len(), 8);
    for ((s, a), (_, b)) in single.losses.iter().zip(&double.losses) {
        // the mean over two halves equals the mean over the batch up to rounding
        assert!(
            (a - b).abs() < 1e-4,
            "step {s}: one device {a}, two devices {b}"
        );
    }
}

/// Steps between checkpoints are logged once the next step is queued, with
/// their losses read on other threads: still one `metrics.jsonl` line per
/// step, in step order, each with the step's loss, and validation on the
/// checkpoint steps only.
#[test]
fn every_step_is_logged_once_in_order_with_its_loss() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(dir.path(), 5, 1e-2, false, None).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5]);
    assert_eq!(report.losses.len(), 5);
    for (line, (step, loss)) in lines.iter().zip(&report.losses) {
        assert_eq!(line["loss"].as_f64().unwrap(), *loss, "step {step}");
        // checkpoint_every = 2, and the last step
        let validated = step % 2 == 0 || *step == 5;
        assert_eq!(
            !line["valid_loss"].is_null(),
            validated,
            "step {step}: {line}"
        );
    }
}

#[test]
fn resume_moves_metrics_after_the_checkpoint_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut text = String::new();
    for step in 1..=7 {
        text.push_str(&format!(
            "{{\"step\":{step},\"loss\":1.0,\"lr\":0.1,\"tokens_per_s\":1.0}}\n"
        ));
    }
    text.push_str("{\"step\":8,\"lo"); // torn by a kill
    std::fs::write(&path, text).unwrap();
    let moved = combiner_train::drop_metrics_after(dir.path(), 4).unwrap();
    assert_eq!(moved, 4);
    let steps = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        steps(&path),
        (1..=4)
            .map(|s| format!("{{\"step\":{s}"))
            .collect::<Vec<_>>()
    );
    let aside = dir.path().join("metrics.after-checkpoint-4.jsonl");
    assert_eq!(steps(&aside).len(), 4);
    // nothing after the checkpoint: nothing moves
    assert_eq!(
        combiner_train::drop_metrics_after(dir.path(), 4).unwrap(),
        0
    );
}

#[test]
fn data_parallel_replicas_run_at_the_same_time() {
    // the replicas of one step meet at a barrier: run one after the other
    // they would wait forever, so the watchdog turns that into a failure
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let barrier = std::sync::Barrier::new(3);
        let out = combiner_train::in_parallel(vec![10, 20, 30], |i, x| {
            barrier.wait();
            x + i
        });
        tx.send(out).ok();
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the replicas did not run concurrently");
    assert_eq!(out, vec![10, 21, 32], "results come back in device order");
}

#[test]
fn a_damaged_checkpoint_is_an_error_naming_it() {
    for (what, damage) in [
        ("truncated to half", 0usize),
        ("truncated to 10 bytes", 1),
        ("a byte flipped", 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 8, 1e-2, false, Some(4)).unwrap();
        let ckpt = std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("model-4")
            })
            .expect("the step-4 model checkpoint");
        let mut bytes = std::fs::read(&ckpt).unwrap();
        match damage {
            0 => bytes.truncate(bytes.len() / 2),
            1 => bytes.truncate(10),
            _ => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xA5;
            }
        }
        std::fs::write(&ckpt, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| run(dir.path(), 8, 1e-2, true, None));
        match outcome {
            Err(_) => panic!("{what}: resuming panicked"),
            Ok(Ok(_)) => {
                // a flipped byte inside a weight is still a readable record
                assert_eq!(damage, 2, "{what}: the damage went unnoticed");
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                assert!(text.contains("model-4"), "{what}: {text}");
            }
        }
    }
}

/// Mixed precision through the loop: ndarray has no bf16, so f64 stands in
/// as the compute dtype (ndarray refuses mixed-dtype ops, so a missing cast
/// fails). The loss curve follows the f32 run, one device or two, and the
/// trained weights are still f32.
#[test]
fn mixed_precision_follows_the_f32_loss_curve_and_keeps_f32_weights() {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Dtypes(Vec<DType>);
    impl ModuleVisitor<IB> for Dtypes {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<IB, D>>) {
            self.0.push(p.val().dtype());
        }
    }
    let steps = 6;
    let f32_dir = tempfile::tempdir().unwrap();
    let (_, reference) = run_with(f32_dir.path(), steps, 3e-3, false, None, 1, None).unwrap();
    for devices in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let (model, report) = run_with(
            dir.path(),
            steps,
            3e-3,
            false,
            None,
            devices,
            Some(FloatDType::F64),
        )
        .unwrap();
        assert_eq!(report.losses.len(), steps);
        for ((s, a), (_, b)) in report.losses.iter().zip(&reference.losses) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "{devices} device(s), step {s}: {a} against f32 {b}"
            );
        }
        let mut dtypes = Dtypes(vec![]);
        model.visit(&mut dtypes);
        assert!(!dtypes.0.is_empty());
        assert!(dtypes.0.iter().all(|&d| d == DType::F32), "{:?}", dtypes.0);
    }
}
