//! One training loop for every model of the zoo, on burn-train's `Learner`
//! and its metrics renderer (the TUI dashboard in a terminal, plain logs
//! otherwise).
//!
//! The loop counts optimizer steps, not epochs: it evaluates and writes a
//! checkpoint every `checkpoint_every` steps, each file atomically, together
//! with the data position, so that a resumed run continues exactly where the
//! interrupted one stopped. A non-finite loss stops the run and names the
//! last good checkpoint: no checkpoint is written after a step whose loss
//! has not been read and found finite.
//!
//! The loop logs each step once the next one is queued; where the backend
//! allows it ([`allow_async_reads`]) the loss is read on a thread of its
//! own meanwhile, so the host never waits for the device with nothing
//! queued behind the wait (steps that validate and checkpoint are finished
//! at once).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod schedule;

use std::collections::VecDeque;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::optim::{GradientsAccumulator, Optimizer};
use burn::record::{FileRecorder, Record, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::DeviceOps;
use burn::tensor::Tensor;
use burn::train::checkpoint::AsyncCheckpointer;
use burn::train::metric::store::EventStoreClient;
use burn::train::metric::LearningRateMetric;
use burn::train::renderer::MetricsRenderer;
use burn::train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent,
    LearningCheckpointer, LearningComponentsMarker, LearningComponentsTypes,
    SupervisedLearningStrategy, SupervisedTraining, SupervisedTrainingEventProcessor, TrainLoader,
    TrainOutput, TrainStep, TrainingComponents, TrainingItem, TrainingModel, TrainingStrategy,
    ValidLoader,
};
use combiner_nn::precision::{grads_to_master, to_compute};
use combiner_nn::{Objective, OnlineKmeans, StepOutput};

use checkpoint::{
    clear_partial, complete_checkpoints, prune_checkpoints, state_path, write_json_atomic,
    AtomicCheckpointer, SaveAlways, TrainState,
};
use metrics::{Quantity, ZooMetric};
pub use schedule::{Decay, WarmupDecay};

/// A failed run, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error("non-finite loss ({loss}) at step {step}: training stopped; {kept}")]
    NonFiniteLoss {
        /// Step at which it happened.
        step: usize,
        /// The loss value.
        loss: f64,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// A checkpoint could not be written (the run stopped).
    #[error("cannot write a checkpoint: {reason}; {kept}")]
    CheckpointWrite {
        /// The file and the cause.
        reason: String,
        /// Which checkpoint is kept.
        kept: String,
    },
    /// A checkpoint could not be read.
    #[error("cannot read checkpoint {path}: {reason}")]
    Checkpoint {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// File system trouble in the run directory.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Nothing to do.
    #[error("{0}")]
    Invalid(String),
    /// Stopped by Ctrl-C / SIGTERM (or `q` in the dashboard) after a checkpoint.
    #[error("interrupted: stopped after step {step}, whose checkpoint is in {dir}")]
    Interrupted {
        /// The last step, checkpointed.
        step: usize,
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks a running `fit` to stop cleanly: it finishes the step in flight,
/// validates, writes a checkpoint and returns [`TrainError::Interrupted`].
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// True once [`request_stop`] was called (or a handled signal arrived).
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// Makes SIGINT and SIGTERM request a clean stop ([`request_stop`]); a
/// second one while the first is pending ends the process at once (status 130).
#[cfg(unix)]
pub fn install_signal_handlers() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // order matters: the conditional exit sees the flag set by the first signal
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    std::thread::spawn(move || loop {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            if !stop_requested() {
                eprintln!("stop requested: finishing the step in flight and writing a checkpoint (press Ctrl-C again to quit at once)");
            }
            request_stop();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    Ok(())
}

/// Signals are not handled on this platform.
#[cfg(not(unix))]
pub fn install_signal_handlers() -> std::io::Result<()> {
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a run proceeds.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// The run directory (checkpoints, metrics, burn's logs).
    pub run_dir: PathBuf,
    /// Total optimizer steps.
    pub steps: usize,
    /// Evaluate and checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Batches per optimizer step (gradient accumulation).
    pub grad_accumulation: usize,
    /// Items per optimizer step and accumulation round, over all devices
    /// (the global batch); each device's loader batch is `batch_size / devices`.
    pub batch_size: usize,
    /// Continue from the last complete checkpoint in `run_dir`.
    pub resume: bool,
    /// Stop after this many steps of this process (for tests of resume).
    pub stop_after: Option<usize>,
    /// The objective, which picks the metrics.
    pub objective: Objective,
    /// Use burn's default renderer (TUI in a terminal); else plain progress lines.
    pub dashboard: bool,
    /// Mixed precision: `Some(BF16 | F16)` runs each step on a copy of the
    /// model whose block matmuls and attention use that dtype
    /// ([`combiner_nn::precision`]); weights and optimizer state keep theirs.
    /// `None`: everything in the model's dtype.
    pub compute_dtype: Option<burn::tensor::FloatDType>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    /// The step the run started from (0 for a fresh run).
    pub start_step: usize,
    /// The last step completed.
    pub end_step: usize,
    /// `(step, loss)` of every step of this process.
    pub losses: Vec<(usize, f64)>,
    /// `(step, mean validation loss)` at every checkpoint.
    pub valid: Vec<(usize, f64)>,
    /// `(step, validation accuracy)` at every checkpoint (classifiers only).
    pub valid_accuracy: Vec<(usize, f64)>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    /// Optimizer step.
    pub step: usize,
    /// Training loss (nats).
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Input tokens per second.
    pub tokens_per_s: f64,
    /// Validation loss, when evaluated at this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
    /// Validation accuracy (classifiers), when evaluated at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
    /// Milliseconds the host waited for the device when it read the step's
    /// loss: the device's lead. Near zero, the host is the bottleneck (it
    /// launches work no faster than the device runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
}

/// On resume from `step`: lines of `metrics.jsonl` after that step (written
/// by a run stopped after its last checkpoint) are moved to
/// `metrics.after-checkpoint-<step>.jsonl`, so that every step appears once
/// in the history. Both files are replaced atomically. Returns the number
/// of lines moved.
pub fn drop_metrics_after(run_dir: &Path, step: usize) -> Result<usize, TrainError> {
    let path = run_dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(0);
    };
    let (mut keep, mut moved) = (String::new(), String::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let after = serde_json::from_str::<StepLog>(line)
            .map(|l| l.step > step)
            // a torn last line of a killed run is not history either
            .unwrap_or(true);
        let out = if after { &mut moved } else { &mut keep };
        out.push_str(line);
        out.push('\n');
    }
    if moved.is_empty() {
        return Ok(0);
    }
    let aside = run_dir.join(format!("metrics.after-checkpoint-{step}.jsonl"));
    let write = |p: &Path, body: &str| -> Result<(), TrainError> {
        let tmp = p.with_extension("jsonl.partial");
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        std::fs::rename(&tmp, p).map_err(io(p))
    };
    write(&aside, &moved)?;
    write(&path, &keep)?;
    let n = moved.lines().count();
    eprintln!(
        "resuming from step {step}: {n} line(s) of metrics.jsonl after it moved to {}",
        aside.display()
    );
    Ok(n)
}

/// Names the newest complete checkpoint in `dir`, for error messages.
fn kept_checkpoint(dir: &Path, ext: &str) -> String {
    match complete_checkpoints(dir, ext).last() {
        Some(s) => format!("the last good checkpoint is step {s} in {}", dir.display()),
        None => "no checkpoint was written yet".to_string(),
    }
}

/// The checkpoint directory of a run.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The steps of the complete checkpoints of a run, ascending.
pub fn checkpoints_of<B: burn::tensor::backend::Backend, FR: FileRecorder<B>>(
    run_dir: &Path,
) -> Vec<usize> {
    complete_checkpoints(&checkpoint_dir(run_dir), FR::file_extension())
}

struct Shared {
    losses: Vec<(usize, f64)>,
    valid: Vec<(usize, f64)>,
    valid_accuracy: Vec<(usize, f64)>,
    error: Option<TrainError>,
    end_step: usize,
}

/// The step-based strategy run by burn's `SupervisedTraining`.
struct StepStrategy<LC: LearningComponentsTypes, FR> {
    device: burn::tensor::Device<LC::Backend>,
    /// Data-parallel devices (the first is `device`); one entry on a single device.
    devices: Vec<burn::tensor::Device<LC::Backend>>,
    opts: FitOptions,
    start: TrainState,
    recorder: FR,
    shared: Arc<Mutex<Shared>>,
    _lc: PhantomData<LC>,
}

fn loss_of<B: burn::tensor::backend::Backend>(out: &StepOutput<B>) -> f64 {
    scalar(out.loss.clone())
}

/// The one value of `x` on the host (waits for the device).
fn scalar<B: burn::tensor::backend::Backend>(x: Tensor<B, 1>) -> f64 {
    burn::tensor::ElementConversion::elem(x.into_scalar())
}

/// Backends whose tensors the loop may read on other threads than its own.
static ASYNC_READS: combiner::kernel::Registry = combiner::kernel::Registry::new();

/// Lets the training loop read `B`'s tensors on threads other than the one
/// that queued their operations: each step's loss is then read on a thread
/// of its own while the loop queues the next step, and the training batches
/// are made and moved to the device on a loader thread. libtorch allows it
/// (its blocking reads and uploads then hold up those threads, not the
/// loop); burn 0.21's fusion backends (wgpu, CubeCL) panicked with it ("Should
/// have handle for tensor": burn-fusion's cross-thread handle race,
/// tracel-ai/burn#4947 and #4328), so backends read on the loop's thread
/// unless registered here.
pub fn allow_async_reads<B: burn::tensor::backend::Backend>() {
    ASYNC_READS.insert::<B, ()>(Arc::new(()));
}

/// Whether [`allow_async_reads`] was called for `B`.
pub fn async_reads<B: burn::tensor::backend::Backend>() -> bool {
    ASYNC_READS.get::<B, ()>().is_some()
}

/// A loss read back to the host: on a thread of its own where the backend
/// allows it ([`allow_async_reads`]; the read waits for the device, the
/// loop goes on queueing the next step meanwhile), at once otherwise.
enum LossRead {
    Thread(std::thread::JoinHandle<f64>),
    Ready(f64),
}

impl LossRead {
    fn start<B: burn::tensor::backend::Backend>(loss: Tensor<B, 1>) -> Self {
        let read = move || scalar(loss);
        if async_reads::<B>() {
            LossRead::Thread(std::thread::spawn(read))
        } else {
            LossRead::Ready(read())
        }
    }

    fn wait(self) -> f64 {
        match self {
            LossRead::Thread(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            LossRead::Ready(v) => v,
        }
    }
}

/// A step whose update is queued and whose loss is not read yet.
struct Queued {
    step: usize,
    items: usize,
    lr: f64,
    tokens_per_s: f64,
    /// One read per micro-batch of the step.
    reads: Vec<LossRead>,
    /// Whether validation and a checkpoint follow the step.
    evaluate: bool,
    /// Whether the run stops after the step.
    stopping: bool,
    global: Progress,
}

/// What finishing a step touches.
struct Finish<'a, LC: LearningComponentsTypes> {
    learner: &'a mut Learner<LC>,
    valid: &'a ValidLoader<LC>,
    processor: &'a mut SupervisedTrainingEventProcessor<LC>,
    checkpointer: &'a mut LearningCheckpointer<LC>,
    store: &'a EventStoreClient,
    log: &'a mut MetricsLog,
    write_failed: &'a Interrupter,
    /// Seconds the host waited for losses since the last line.
    wait: f64,
    /// The last step finished.
    done: usize,
}

/// The components of a run of [`StepStrategy`].
type Lc<B, LR, M, O> = LearningComponentsMarker<B, LR, M, O>;

/// The training batches of a run, dealt to its devices.
struct Feed<'a, B: AutodiffBackend, I> {
    /// One iterator per device over the same stream: loader batch k goes to
    /// device k % n_dev, and every device's loader skips the batches of the others.
    iters: Vec<Box<dyn DataLoaderIterator<I> + 'a>>,
    /// Loader batches taken so far.
    index: usize,
    /// With several devices, one round of batches (one per device) runs
    /// concurrently, one thread per replica; their outputs are then taken
    /// in device order, exactly as a sequential loop would.
    ready: VecDeque<(TrainOutput<StepOutput<B>>, Progress)>,
    /// Routing / Combiner-Learnable: centroids follow the keys of each
    /// step's last first-device batch (online k-means).
    kmeans: bool,
    /// That batch, for the current step.
    kmeans_batch: Option<I>,
}

/// `metrics.jsonl` of a run: one [`StepLog`] a line, appended step by step.
struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    fn open(run_dir: &Path) -> Result<Self, TrainError> {
        let path = run_dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(MetricsLog { path, file })
    }

    fn append(&mut self, line: &StepLog) -> Result<(), TrainError> {
        let text = serde_json::to_string(line).unwrap_or_default();
        writeln!(self.file, "{text}").map_err(io(&self.path))
    }
}

/// The plain progress line of a step (without the dashboard).
fn progress_line(line: &StepLog, steps: usize, objective: Objective) -> String {
    let StepLog {
        step,
        loss,
        lr,
        tokens_per_s: tps,
        valid_loss,
        valid_accuracy,
        ..
    } = *line;
    // classifiers have no accuracy per step: the loss says it all
    let extra = match objective {
        Objective::Classification => String::new(),
        o => format!(" {}", o.describe(loss, None)),
    };
    let v = valid_loss.map_or(String::new(), |v| {
        format!(
            " | valid loss {v:.4} ({})",
            objective.describe(v, valid_accuracy)
        )
    });
    format!("step {step:>6}/{steps} loss {loss:.4}{extra} lr {lr:.2e} {tps:.0} tok/s{v}")
}

/// The failure a checkpoint writer reported through `write_failed`, if any.
fn checkpoint_write_error(write_failed: &Interrupter, dir: &Path, ext: &str) -> Option<TrainError> {
    write_failed
        .get_message()
        .map(|reason| TrainError::CheckpointWrite {
            // burn wraps the message as "Unknown error: `...`"
            reason: reason
                .trim_start_matches("Unknown error: ")
                .trim_matches('`')
                .to_string(),
            kept: kept_checkpoint(dir, ext),
        })
}

impl<B, LR, M, O, FR> StepStrategy<Lc<B, LR, M, O>, FR>
where
    B: AutodiffBackend,
    LR: burn::lr_scheduler::LrScheduler + 'static,
    M: TrainStep<Output = StepOutput<B>>
        + AutodiffModule<B>
        + OnlineKmeans<<M as TrainStep>::Input>
        + core::fmt::Display
        + 'static,
    <M as TrainStep>::Input: Clone,
    M::InnerModule: InferenceStep<Output = StepOutput<B::InnerBackend>>,
    O: Optimizer<M, B> + 'static,
    FR: FileRecorder<B> + Clone + 'static,
{
    /// Records why the run stops.
    fn fail(&self, e: TrainError) {
        self.shared.lock().unwrap().error = Some(e);
    }

    /// burn's checkpointer of model, optimizer and scheduler, each part
    /// written atomically into `dir`; a failed write stops the run through
    /// `write_failed`.
    fn checkpointer(
        &self,
        dir: &Path,
        write_failed: &Interrupter,
    ) -> LearningCheckpointer<Lc<B, LR, M, O>> {
        macro_rules! part {
            ($name:literal) => {
                AsyncCheckpointer::new(AtomicCheckpointer::new(self.recorder.clone(), dir, $name))
                    .with_interrupter(write_failed.clone())
            };
        }
        LearningCheckpointer::new(
            part!("model"),
            part!("optim"),
            part!("scheduler"),
            Box::new(SaveAlways),
        )
    }

    /// The output of the next batch: a train step on the single device, or
    /// the next replica output of the current round of batches (one per
    /// device, run concurrently when the round is empty). Steps the learning
    /// rate at the first batch of an optimizer step (`new_step`). `None`
    /// when the data ends.
    fn next_output(
        &self,
        feed: &mut Feed<'_, B, <M as TrainStep>::Input>,
        learner: &mut Learner<Lc<B, LR, M, O>>,
        new_step: bool,
    ) -> Option<(TrainOutput<StepOutput<B>>, Progress)> {
        let n_dev = self.devices.len().max(1);
        let compute = self.opts.compute_dtype;
        if n_dev == 1 {
            let batch = feed.iters[0].next()?;
            feed.index += 1;
            let progress = feed.iters[0].progress();
            if feed.kmeans {
                feed.kmeans_batch = Some(batch.clone());
            }
            if new_step {
                learner.lr_step();
            }
            let out = match compute {
                None => learner.train_step(batch),
                Some(_) => {
                    let master = learner.model();
                    let mut out = to_compute(master.clone(), compute).step(batch);
                    grads_to_master(&master, &mut out.grads);
                    out
                }
            };
            return Some((out, progress));
        }
        if feed.ready.is_empty() {
            let mut round = Vec::with_capacity(n_dev);
            for _ in 0..n_dev {
                let d = feed.index % n_dev;
                let mut batch = None;
                for (k, it) in feed.iters.iter_mut().enumerate() {
                    let b = it.next();
                    if k == d {
                        batch = b;
                    }
                }
                let Some(batch) = batch else { break };
                feed.index += 1;
                if feed.kmeans && d == 0 {
                    feed.kmeans_batch = Some(batch.clone());
                }
                round.push((batch, feed.iters[d].progress()));
            }
            let model = learner.model();
            let outs = run_replicas(&model, &self.device, &self.devices, round, compute);
            feed.ready.extend(outs);
        }
        let next = feed.ready.pop_front()?;
        if new_step {
            learner.lr_step();
        }
        Some(next)
    }

    /// Mean loss and accuracy (classifiers) of the model over `valid` after
    /// `step`, reported to the dashboard and recorded for the [`FitReport`];
    /// `None` when `valid` holds no predictions.
    fn validate(
        &self,
        learner: &Learner<Lc<B, LR, M, O>>,
        valid: &ValidLoader<Lc<B, LR, M, O>>,
        processor: &mut SupervisedTrainingEventProcessor<Lc<B, LR, M, O>>,
        global: &Progress,
        step: usize,
    ) -> (Option<f64>, Option<f64>) {
        let model = to_compute(learner.model().valid(), self.opts.compute_dtype);
        let (mut sum, mut n) = (0.0, 0usize);
        let mut correct: Option<usize> = None;
        let mut viter = valid.iter();
        let mut vi = 0;
        while let Some(vb) = viter.next() {
            vi += 1;
            let out = model.step(vb);
            sum += loss_of(&out) * out.count as f64;
            n += out.count;
            if let Some(c) = &out.correct {
                let c: i64 = burn::tensor::ElementConversion::elem(c.clone().into_scalar());
                *correct.get_or_insert(0) += c as usize;
            }
            let item = TrainingItem::new(out, viter.progress(), global.clone(), Some(vi), None);
            processor.process_valid(LearnerEvent::ProcessedItem(item));
        }
        processor.process_valid(LearnerEvent::EndEpoch(step));
        if n == 0 {
            return (None, None);
        }
        let valid_loss = sum / n as f64;
        let valid_accuracy = correct.map(|c| c as f64 / n as f64);
        let mut shared = self.shared.lock().unwrap();
        shared.valid.push((step, valid_loss));
        if let Some(a) = valid_accuracy {
            shared.valid_accuracy.push((step, a));
        }
        (Some(valid_loss), valid_accuracy)
    }

    /// Reads the losses of step `q`, then: the NaN guard, validation and a
    /// checkpoint where due, the `metrics.jsonl` line and the progress
    /// line. `false` when the run stops here (an error is recorded, or a
    /// stop was requested).
    fn finish(&self, q: Queued, cx: &mut Finish<'_, Lc<B, LR, M, O>>) -> bool {
        let opts = &self.opts;
        let dir = checkpoint_dir(&opts.run_dir);
        let ext = <FR as FileRecorder<B>>::file_extension();
        let read = std::time::Instant::now();
        let losses: Vec<f64> = q.reads.into_iter().map(LossRead::wait).collect();
        cx.wait += read.elapsed().as_secs_f64();
        if let Some(&loss) = losses.iter().find(|l| !l.is_finite()) {
            // the model in memory may hold this step's update and the next
            // one's; the checkpoints on disk do not
            self.fail(TrainError::NonFiniteLoss {
                step: q.step,
                loss,
                kept: kept_checkpoint(&dir, ext),
            });
            return false;
        }
        let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        self.shared.lock().unwrap().losses.push((q.step, loss));
        let (mut valid_loss, mut valid_accuracy) = (None, None);
        if q.evaluate {
            (valid_loss, valid_accuracy) =
                self.validate(cx.learner, cx.valid, cx.processor, &q.global, q.step);
            let state = TrainState {
                step: q.step,
                items: q.items,
                loss,
            };
            if let Err(e) = self.checkpoint(cx.checkpointer, cx.learner, cx.store, state) {
                self.fail(e);
                return false;
            }
        }
        if let Some(e) = checkpoint_write_error(cx.write_failed, &dir, ext) {
            self.fail(e);
            return false;
        }
        let line = StepLog {
            step: q.step,
            loss,
            lr: q.lr,
            tokens_per_s: q.tokens_per_s,
            valid_loss,
            valid_accuracy,
            wait_ms: Some(1e3 * std::mem::take(&mut cx.wait)),
        };
        if let Err(e) = cx.log.append(&line) {
            self.fail(e);
            return false;
        }
        cx.done = q.step;
        if !opts.dashboard && (q.evaluate || q.step == 1) {
            eprintln!("{}", progress_line(&line, opts.steps, opts.objective));
        }
        if q.stopping {
            if q.step < opts.steps {
                self.fail(TrainError::Interrupted {
                    step: q.step,
                    dir: dir.clone(),
                });
            }
            return false;
        }
        true
    }

    /// Writes the checkpoint of `state.step` (model, optimizer and
    /// scheduler through `checkpointer`, then the data position) and prunes
    /// the old ones.
    fn checkpoint(
        &self,
        checkpointer: &mut LearningCheckpointer<Lc<B, LR, M, O>>,
        learner: &Learner<Lc<B, LR, M, O>>,
        store: &EventStoreClient,
        state: TrainState,
    ) -> Result<(), TrainError> {
        let dir = checkpoint_dir(&self.opts.run_dir);
        let ext = <FR as FileRecorder<B>>::file_extension();
        checkpointer.checkpoint(learner, state.step, store);
        let path = state_path(&dir, state.step);
        write_json_atomic(&path, &state).map_err(io(&path))?;
        prune_checkpoints(&dir, ext, self.opts.keep_checkpoints).map_err(io(&dir))
    }
}

impl<B, LR, M, O, FR> SupervisedLearningStrategy<Lc<B, LR, M, O>>
    for StepStrategy<Lc<B, LR, M, O>, FR>
where
    B: AutodiffBackend,
    LR: burn::lr_scheduler::LrScheduler + 'static,
    M: TrainStep<Output = StepOutput<B>>
        + AutodiffModule<B>
        + OnlineKmeans<<M as TrainStep>::Input>
        + core::fmt::Display
        + 'static,
    <M as TrainStep>::Input: Clone,
    M::InnerModule: InferenceStep<Output = StepOutput<B::InnerBackend>>,
    O: Optimizer<M, B> + 'static,
    FR: FileRecorder<B> + Clone + 'static,
{
    /// The loop: one optimizer step per `grad_accumulation` rounds of
    /// batches ([`Self::next_output`]); each step's loss is read while the
    /// next step runs, then [`Self::finish`] guards against NaN, validates
    /// and writes a checkpoint every `checkpoint_every` steps (and at the end
    /// or on a stop request, at once) and writes one `metrics.jsonl` line.
    fn fit(
        &self,
        components: TrainingComponents<Lc<B, LR, M, O>>,
        mut learner: Learner<Lc<B, LR, M, O>>,
        dataloader_train: TrainLoader<Lc<B, LR, M, O>>,
        dataloader_valid: ValidLoader<Lc<B, LR, M, O>>,
        _starting_epoch: usize,
    ) -> (
        TrainingModel<Lc<B, LR, M, O>>,
        SupervisedTrainingEventProcessor<Lc<B, LR, M, O>>,
    ) {
        let opts = &self.opts;
        let dir = checkpoint_dir(&opts.run_dir);
        let ext = <FR as FileRecorder<B>>::file_extension();
        let n_dev = self.devices.len().max(1);
        let trains: Vec<_> = self
            .devices
            .iter()
            .map(|d| dataloader_train.to_device(d))
            .collect();
        let valid = dataloader_valid.to_device(self.device.inner());
        learner.fork(&self.device);
        let mut processor = components.event_processor;
        let store = components.event_store;
        // a failed checkpoint write stops the run through this handle
        let write_failed = Interrupter::new();
        let mut checkpointer = self.checkpointer(&dir, &write_failed);
        let mut log = match MetricsLog::open(&opts.run_dir) {
            Ok(log) => log,
            Err(e) => {
                self.fail(e);
                drop(checkpointer);
                return (learner.model(), processor);
            }
        };

        let global = Progress {
            items_processed: self.start.step,
            items_total: opts.steps,
        };
        let mut feed = Feed {
            iters: trains.iter().map(|t| t.iter()).collect(),
            index: 0,
            ready: VecDeque::new(),
            kmeans: learner.model().has_centroids(),
            kmeans_batch: None,
        };
        let mut step = self.start.step;
        let mut items = self.start.items;
        let mut accumulator = GradientsAccumulator::new();
        let mut pending = 0;
        let mut reads: Vec<LossRead> = Vec::new();
        let mut last_time = std::time::Instant::now();
        let mut tokens = 0usize;
        // the last step queued whose loss is still being read: it is logged
        // once the next step is queued, so the host never waits for the
        // device with nothing queued behind the wait
        let mut queued: Option<Queued> = None;
        let mut cx = Finish {
            learner: &mut learner,
            valid: &valid,
            processor: &mut processor,
            checkpointer: &mut checkpointer,
            store: &store,
            log: &mut log,
            write_failed: &write_failed,
            wait: 0.0,
            done: self.start.step,
        };
        let stop_at = opts
            .stop_after
            .map_or(opts.steps, |n| (self.start.step + n).min(opts.steps));
        let mut going = true;
        while going && step < stop_at {
            let Some((out, progress)) = self.next_output(&mut feed, cx.learner, pending == 0)
            else {
                break;
            };
            tokens += out.item.tokens;
            items += opts.batch_size / n_dev;
            accumulator.accumulate(&cx.learner.model(), out.grads);
            pending += 1;
            let lr = cx.learner.lr_current();
            let last = pending == opts.grad_accumulation * n_dev;
            if last {
                // the optimizer step, on the mean over the global batch
                // whatever its split into micro-batches and devices
                let mut grads = accumulator.grads();
                scale_grads(&cx.learner.model(), &mut grads, 1.0 / pending as f64);
                cx.learner.optimizer_step(grads);
            }
            reads.push(LossRead::start(out.item.loss.clone().inner()));
            if !last {
                let item =
                    TrainingItem::new(out.item, progress, global.clone(), Some(step + 1), Some(lr));
                cx.processor
                    .process_train(LearnerEvent::ProcessedItem(item));
                continue;
            }
            if let Some(b) = feed.kmeans_batch.take() {
                let moved = cx.learner.model().update_centroids(&b);
                cx.learner.load_model(moved.into_record());
            }
            pending = 0;
            step += 1;
            let elapsed = last_time.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_s = tokens as f64 / elapsed;
            last_time = std::time::Instant::now();
            tokens = 0;
            let global_now = Progress {
                items_processed: step,
                items_total: opts.steps,
            };
            let item =
                TrainingItem::new(out.item, progress, global_now.clone(), Some(step), Some(lr));
            cx.processor
                .process_train(LearnerEvent::ProcessedItem(item));

            // the previous step's loss, read while the device runs this one
            if let Some(q) = queued.take() {
                going = self.finish(q, &mut cx);
                if !going {
                    break;
                }
            }
            let stopping = stop_requested() || components.interrupter.should_stop();
            let q = Queued {
                step,
                items,
                lr,
                tokens_per_s,
                reads: std::mem::take(&mut reads),
                evaluate: step.is_multiple_of(opts.checkpoint_every)
                    || step == opts.steps
                    || step == stop_at
                    || stopping,
                stopping,
                global: global_now,
            };
            if q.evaluate {
                // evaluation and checkpoint see this step's model
                going = self.finish(q, &mut cx);
            } else {
                queued = Some(q);
            }
        }
        if let Some(q) = queued.take() {
            self.finish(q, &mut cx);
        }
        let done = cx.done;
        processor.process_train(LearnerEvent::EndEpoch(done));
        self.shared.lock().unwrap().end_step = done;
        // joins the checkpoint writers before the model is handed back
        drop(checkpointer);
        if let Some(e) = checkpoint_write_error(&write_failed, &dir, ext) {
            let mut shared = self.shared.lock().unwrap();
            if shared.error.is_none() {
                shared.error = Some(e);
            }
        }
        (learner.model(), processor)
    }
}

/// Runs `f(i, item)` for every item at once, each on its own scoped thread,
/// and returns the results in item order (a panic in one is re-raised).
pub fn in_parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(usize, T) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| s.spawn(move || f(i, item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Runs one batch per device concurrently ([`in_parallel`]): each replica
/// is a fork of `model` on its device (in the `compute` dtype, see
/// [`to_compute`]); the outputs come back in device order with their
/// gradients moved to `main` in the dtype of `model`'s weights.
fn run_replicas<B, M>(
    model: &M,
    main: &B::Device,
    devices: &[B::Device],
    round: Vec<(M::Input, Progress)>,
    compute: Option<burn::tensor::FloatDType>,
) -> Vec<(TrainOutput<M::Output>, Progress)>
where
    B: AutodiffBackend,
    M: TrainStep + AutodiffModule<B>,
    M::Input: Send,
    M::Output: Send,
{
    let jobs: Vec<_> = round.into_iter().map(|r| (r, model.clone())).collect();
    in_parallel(jobs, |d, ((batch, progress), model)| {
        // the master's dtypes, for the gradients (a clone shares the tensors)
        let master = compute.map(|_| model.clone());
        let replica = to_compute(model.fork(&devices[d]), compute);
        let mut out = replica.step(batch);
        // the fork keeps the parameter ids, so it maps its own gradients
        out.grads = out.grads.to_device(main, &replica);
        if let Some(master) = &master {
            grads_to_master(master, &mut out.grads);
        }
        (out, progress)
    })
}

/// Multiplies every gradient in `grads` by `factor` (turning the sum over
/// micro-batches and devices into their mean).
fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads
                    .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    if factor != 1.0 {
        model.visit(&mut Scale { grads, factor });
    }
}

/// A renderer that prints nothing: progress goes to stderr lines instead.
struct Quiet;

impl burn::train::renderer::MetricsRendererTraining for Quiet {
    fn update_train(&mut self, _state: burn::train::renderer::MetricState) {}
    fn update_valid(&mut self, _state: burn::train::renderer::MetricState) {}
    fn render_train(
        &mut self,
        _item: burn::train::renderer::TrainingProgress,
        _progress_indicators: Vec<burn::train::renderer::ProgressType>,
    ) {
    }
    fn render_valid(
        &mut self,
        _item: burn::train::renderer::TrainingProgress,
        _progress_indicators: Vec<burn::train::renderer::ProgressType>,
    ) {
    }
}

impl burn::train::renderer::MetricsRendererEvaluation for Quiet {
    fn update_test(
        &mut self,
        _name: burn::train::renderer::EvaluationName,
        _state: burn::train::renderer::MetricState,
    ) {
    }
    fn render_test(
        &mut self,
        _item: burn::train::renderer::EvaluationProgress,
        _progress_indicators: Vec<burn::train::renderer::ProgressType>,
    ) {
    }
}

impl MetricsRenderer for Quiet {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: burn::train::metric::MetricDefinition) {}
}

/// Trains `model` with `optim` and `schedule`, or resumes it from the last
/// complete checkpoint in `opts.run_dir` when `opts.resume` is set.
///
/// `train` must yield the whole run's batches in order, without shuffling
/// (`steps * grad_accumulation * devices.len()` batches of
/// `batch_size / devices.len()` items; the data position of a resumed run is
/// a slice of it). `valid` is evaluated at every checkpoint.
///
/// With several `devices` the run is data-parallel: each optimizer step
/// sends consecutive loader batches to the devices in turn, runs forward and
/// backward on a replica there, brings the gradients to the first device and
/// averages them (burn's `fork` and `GradientsParams::to_device`), so the
/// update equals the single-device update on the same global batch.
#[allow(clippy::too_many_arguments)]
pub fn fit<B, M, O, FR>(
    model: M,
    optim: O,
    schedule: WarmupDecay,
    train: Arc<dyn DataLoader<B, M::Input>>,
    valid: Arc<dyn DataLoader<B::InnerBackend, <M::InnerModule as InferenceStep>::Input>>,
    recorder: FR,
    devices: Vec<B::Device>,
    opts: FitOptions,
) -> Result<(M::InnerModule, FitReport), TrainError>
where
    B: AutodiffBackend,
    M: TrainStep<Output = StepOutput<B>>
        + AutodiffModule<B>
        + OnlineKmeans<<M as TrainStep>::Input>
        + core::fmt::Display
        + 'static,
    <M as TrainStep>::Input: Clone,
    M::InnerModule: InferenceStep<Output = StepOutput<B::InnerBackend>>,
    O: Optimizer<M, B> + 'static,
    FR: FileRecorder<B> + FileRecorder<B::InnerBackend> + Clone + 'static,
{
    if opts.steps == 0
        || opts.checkpoint_every == 0
        || opts.grad_accumulation == 0
        || opts.batch_size == 0
    {
        return Err(TrainError::Invalid(
            "steps, checkpoint_every, grad_accumulation and batch_size must all be at least 1"
                .into(),
        ));
    }
    let Some(device) = devices.first().cloned() else {
        return Err(TrainError::Invalid("no device given".into()));
    };
    if !opts.batch_size.is_multiple_of(devices.len()) {
        return Err(TrainError::Invalid(format!(
            "the global batch of {} items does not split evenly over {} devices",
            opts.batch_size,
            devices.len()
        )));
    }
    let dir = checkpoint_dir(&opts.run_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    clear_partial(&dir).map_err(io(&dir))?;
    let existing = complete_checkpoints(&dir, <FR as FileRecorder<B>>::file_extension());
    let mut learner = Learner::new(model, optim, schedule);
    let mut start = TrainState {
        step: 0,
        items: 0,
        loss: f64::NAN,
    };
    if opts.resume {
        if let Some(&last) = existing.last() {
            let read_err = |path: PathBuf| {
                move |e: burn::record::RecorderError| TrainError::Checkpoint {
                    path,
                    reason: e.to_string(),
                }
            };
            let p = |part: &str| dir.join(format!("{part}-{last}"));
            let model_rec: <M as burn::module::Module<B>>::Record =
                Recorder::<B>::load(&recorder, p("model"), &device)
                    .map_err(read_err(p("model")))?;
            let optim_rec: O::Record = Recorder::<B>::load(&recorder, p("optim"), &device)
                .map_err(read_err(p("optim")))?;
            let sched_rec: usize = Recorder::<B>::load(&recorder, p("scheduler"), &device)
                .map_err(read_err(p("scheduler")))?;
            learner.load_model(model_rec);
            learner.load_optim(optim_rec);
            learner.load_scheduler(sched_rec);
            let sp = state_path(&dir, last);
            let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
            start = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
                path: sp.clone(),
                reason: e.to_string(),
            })?;
        }
    } else if !existing.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{} already holds checkpoints; resume it or choose a new run directory",
            opts.run_dir.display()
        )));
    }
    if opts.resume {
        drop_metrics_after(&opts.run_dir, start.step)?;
    }
    if start.step >= opts.steps {
        return Err(TrainError::Invalid(format!(
            "the run in {} already reached step {} of {}",
            opts.run_dir.display(),
            start.step,
            opts.steps
        )));
    }
    let total = train.num_items();
    let train = train.slice(start.items.min(total), total);

    let shared = Arc::new(Mutex::new(Shared {
        losses: vec![],
        valid: vec![],
        valid_accuracy: vec![],
        error: None,
        end_step: start.step,
    }));
    let strategy = StepStrategy::<LearningComponentsMarker<B, WarmupDecay, M, O>, FR> {
        device: device.clone(),
        devices: devices.clone(),
        opts: opts.clone(),
        start: start.clone(),
        recorder,
        shared: shared.clone(),
        _lc: PhantomData,
    };
    let quantities: &[Quantity] = match opts.objective {
        Objective::ImageBits => &[
            Quantity::Loss,
            Quantity::BitsPerDim,
            Quantity::TokensPerSecond,
        ],
        Objective::Lm | Objective::Mlm => &[
            Quantity::Loss,
            Quantity::Perplexity,
            Quantity::TokensPerSecond,
        ],
        Objective::Classification => &[
            Quantity::Loss,
            Quantity::Accuracy,
            Quantity::TokensPerSecond,
        ],
    };
    let mut training = SupervisedTraining::new(&opts.run_dir, train, valid)
        .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)))
        .metric_train_numeric(LearningRateMetric::new());
    for &q in quantities {
        training = training.metric_train_numeric(ZooMetric::new(q));
        if q != Quantity::TokensPerSecond {
            training = training.metric_valid_numeric(ZooMetric::new(q));
        }
    }
    if !opts.dashboard {
        training = training.renderer(Quiet);
    }
    let result = training.launch(learner);
    let mut shared = shared.lock().unwrap();
    if let Some(e) = shared.error.take() {
        return Err(e);
    }
    Ok((
        result.model,
        FitReport {
            start_step: start.step,
            end_step: shared.end_step,
            losses: std::mem::take(&mut shared.losses),
            valid: std::mem::take(&mut shared.valid),
            valid_accuracy: std::mem::take(&mut shared.valid_accuracy),
        },
    ))
}

/// Keeps the record type reachable for callers that load checkpoints.
pub type ModelRecord<B, M> = <M as burn::module::Module<B>>::Record;

#[doc(hidden)]
pub fn _assert_record<B: burn::tensor::backend::Backend, R: Record<B>>() {}
