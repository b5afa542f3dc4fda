//! The model families a task can produce, and the one generic path that
//! trains, evaluates and samples each of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::record::{DefaultRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::train::{InferenceStep, TrainStep};
use combiner_data::batcher::{
    ClassificationBatcher, LmBatcher, MlmBatcher, PairBatcher, TokenSequence,
};
use combiner_data::retrieval::RetrievalPair;
use combiner_data::stream::EpochStream;
use combiner_data::text::mlm::{mask_tokens, MlmConfig as Masking};
use combiner_models::image_ar::ImageArConfig;
use combiner_models::lm::LmConfig;
use combiner_models::lra::LraConfig;
use combiner_models::mlm::MlmConfig;
use combiner_nn::{Objective, OnlineKmeans, StepOutput};
use combiner_train::optim::AdamW;
use combiner_train::{checkpoint_dir, checkpoints_of, fit, FitOptions, FitReport, WarmupDecay};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::settings::TrainSettings;
use crate::text::TextCodec;

/// A shared, type-erased dataset.
pub type Items<I> = Arc<dyn Dataset<I>>;

/// A task's data: training and validation sets, and further evaluation sets
/// that `combiner eval` reports (e.g. WikiText-103 test for the LM).
pub struct Data<I> {
    /// Training items (empty when the task was prepared for eval/sample).
    pub train: Items<I>,
    /// Validation items (evaluated at every checkpoint).
    pub valid: Items<I>,
    /// Named extra evaluation sets.
    pub extra: Vec<(String, Items<I>)>,
}

impl<I: Send + Sync + Clone + 'static> Data<I> {
    /// Training and validation sets from vectors, no extra sets.
    pub fn new(train: Vec<I>, valid: Vec<I>) -> Self {
        Data {
            train: Arc::new(burn::data::dataset::InMemDataset::new(train)),
            valid: Arc::new(burn::data::dataset::InMemDataset::new(valid)),
            extra: Vec::new(),
        }
    }
}

/// What a task prepared: a model family with its data.
pub enum Prepared {
    /// Sequence classifier (LRA ListOps, Text, Image, Pathfinder).
    Classifier {
        /// The model.
        model: LraConfig,
        /// Labelled sequences.
        data: Data<TokenSequence>,
        /// Every sequence is padded or cut to this length.
        seq_len: usize,
    },
    /// Dual-encoder pair classifier (LRA Retrieval).
    Pairs {
        /// The shared encoder.
        model: LraConfig,
        /// Document pairs.
        data: Data<RetrievalPair>,
        /// Length of each document.
        seq_len: usize,
    },
    /// Causal language model over text.
    Lm {
        /// The model.
        model: LmConfig,
        /// Windows of `max_len + 1` tokens.
        data: Data<TokenSequence>,
        /// Text <-> ids.
        text: TextCodec,
    },
    /// Autoregressive image model over sub-pixels.
    Image {
        /// The model.
        model: ImageArConfig,
        /// `[START, sub-pixels...]` sequences.
        data: Data<TokenSequence>,
    },
    /// Masked language model over text.
    Mlm {
        /// The model.
        model: MlmConfig,
        /// Sequences of `max_len` tokens.
        data: Data<TokenSequence>,
        /// Text <-> ids.
        text: TextCodec,
        /// BERT masking.
        masking: Masking,
    },
}

impl Prepared {
    /// The objective, which picks the metric.
    pub fn objective(&self) -> Objective {
        match self {
            Prepared::Classifier { .. } | Prepared::Pairs { .. } => Objective::Classification,
            Prepared::Lm { .. } => Objective::Lm,
            Prepared::Image { .. } => Objective::ImageBits,
            Prepared::Mlm { .. } => Objective::Mlm,
        }
    }

    /// Sizes of the training and validation sets.
    pub fn sizes(&self) -> (usize, usize) {
        match self {
            Prepared::Classifier { data, .. }
            | Prepared::Lm { data, .. }
            | Prepared::Image { data, .. }
            | Prepared::Mlm { data, .. } => (data.train.len(), data.valid.len()),
            Prepared::Pairs { data, .. } => (data.train.len(), data.valid.len()),
        }
    }
}

/// How `fit` is to run, apart from the model and data.
pub struct FitPlan<D> {
    /// Optimization settings.
    pub settings: TrainSettings,
    /// Devices (data parallel when more than one).
    pub devices: Vec<D>,
    /// The loop's options except objective, which the family sets.
    pub opts: FitOptions,
}

/// Trains the prepared family: the only place a model meets the loop.
pub fn train<B: AutodiffBackend>(
    prepared: Prepared,
    plan: FitPlan<B::Device>,
) -> Result<FitReport> {
    let objective = prepared.objective();
    let device = plan.devices[0].clone();
    match prepared {
        Prepared::Classifier {
            model,
            data,
            seq_len,
        } => {
            let pad = model.pad_token;
            let b = ClassificationBatcher { seq_len, pad };
            fit_family::<B, _, _, _, _>(model.init(&device), data, b.clone(), b, objective, plan)
        }
        Prepared::Pairs {
            model,
            data,
            seq_len,
        } => {
            let b = PairBatcher {
                seq_len,
                pad: model.pad_token,
            };
            fit_family::<B, _, _, _, _>(
                model.init_retrieval(&device),
                data,
                b.clone(),
                b,
                objective,
                plan,
            )
        }
        Prepared::Lm { model, data, text } => {
            let b = LmBatcher {
                seq_len: model.max_len,
                pad: text.pad(),
            };
            fit_family::<B, _, _, _, _>(model.init(&device), data, b.clone(), b, objective, plan)
        }
        Prepared::Image { model, data } => {
            let b = LmBatcher {
                seq_len: model.seq_len(),
                pad: 0,
            };
            fit_family::<B, _, _, _, _>(model.init(&device), data, b.clone(), b, objective, plan)
        }
        Prepared::Mlm {
            model,
            data,
            text,
            masking,
        } => {
            let seed = plan.settings.seed;
            let (len, pad) = (model.max_len, text.pad());
            fit_family::<B, _, _, _, _>(
                model.init(&device),
                data,
                MlmBatcher::new(len, pad, masking.clone(), seed),
                MlmBatcher::fixed(len, pad, masking, seed.wrapping_add(VALID_MASK_SEED)),
                objective,
                plan,
            )
        }
    }
}

/// Validation masks follow their own seed and each sequence's tokens, so
/// every evaluation (in training and in `combiner eval`) masks alike.
const VALID_MASK_SEED: u64 = 0x005e_ed0f_5a11;

fn fit_family<B, M, I, Bt, Bv>(
    model: M,
    data: Data<I>,
    train_batcher: Bt,
    valid_batcher: Bv,
    objective: Objective,
    plan: FitPlan<B::Device>,
) -> Result<FitReport>
where
    B: AutodiffBackend,
    M: TrainStep<Output = StepOutput<B>>
        + AutodiffModule<B>
        + OnlineKmeans<<M as TrainStep>::Input>
        + core::fmt::Display
        + 'static,
    M::InnerModule: InferenceStep<Output = StepOutput<B::InnerBackend>>,
    M::Input: Send + Clone + std::fmt::Debug + 'static,
    <M::InnerModule as InferenceStep>::Input: Send + Clone + std::fmt::Debug + 'static,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    Bt: Batcher<B, I, M::Input> + 'static,
    Bv: Batcher<B::InnerBackend, I, <M::InnerModule as InferenceStep>::Input> + 'static,
{
    let s = &plan.settings;
    // `fit` refuses a global batch that does not split over the devices
    let n_dev = plan.devices.len().max(1);
    anyhow::ensure!(
        !data.train.is_empty(),
        "the training set is empty (check the task's size settings and the prepared data)"
    );
    anyhow::ensure!(!data.valid.is_empty(), "the validation set is empty");
    let device = plan.devices[0].clone();
    let total = s.steps * s.batch_size * s.grad_accumulation;
    // where the backend allows it, one worker thread makes the batches and
    // moves them to the device: a blocking upload (libtorch's waits for the
    // device's queue) then holds up the worker, not the loop that queues
    // the steps
    let workers = usize::from(combiner_train::async_reads::<B::InnerBackend>());
    let train_dl = DataLoaderBuilder::<B, I, M::Input>::new(train_batcher)
        .batch_size(s.batch_size / n_dev)
        .num_workers(workers)
        .set_device(device.clone())
        .build(EpochStream::new(data.train, total, s.seed));
    let valid_dl =
        DataLoaderBuilder::<B::InnerBackend, I, <M::InnerModule as InferenceStep>::Input>::new(
            valid_batcher,
        )
        .batch_size(s.batch_size)
        .set_device(device.clone())
        .build(data.valid);
    let schedule = WarmupDecay {
        peak: s.lr,
        warmup: s.warmup,
        total: s.steps,
        final_fraction: s.final_lr_fraction,
        step: 0,
        decay: s.schedule,
    };
    let optim = AdamW::new(s.weight_decay as f32, s.grad_clip.map(|c| c as f32)).init();
    let opts = FitOptions {
        objective,
        ..plan.opts
    };
    let (_, report) = fit(
        model,
        optim,
        schedule,
        train_dl,
        valid_dl,
        DefaultRecorder::new(),
        plan.devices,
        opts,
    )?;
    Ok(report)
}

/// One evaluation: mean loss over `count` predictions and the task metric.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    /// The set evaluated.
    pub set: String,
    /// Mean loss in nats.
    pub loss: f64,
    /// Predictions averaged over (examples, tokens, sub-pixels).
    pub count: usize,
    /// Metric name (`bits/dim`, `perplexity`, `accuracy`).
    pub metric: &'static str,
    /// Metric value.
    pub value: f64,
}

impl Evaluation {
    /// The metric as text ([`combiner_nn::describe_metric`]).
    pub fn describe(&self) -> String {
        combiner_nn::describe_metric(self.metric, self.value)
    }
}

/// Loads the last complete checkpoint of `run_dir` into `model`.
pub fn load_model<B: Backend, M: Module<B>>(
    model: M,
    run_dir: &Path,
    device: &B::Device,
) -> Result<(M, usize)> {
    let steps = checkpoints_of::<B, DefaultRecorder>(run_dir);
    let step = *steps.last().with_context(|| {
        format!(
            "{} has no complete checkpoint",
            checkpoint_dir(run_dir).display()
        )
    })?;
    let path = checkpoint_dir(run_dir).join(format!("model-{step}"));
    let record = Recorder::<B>::load(&DefaultRecorder::new(), path.clone(), device)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((model.load_record(record), step))
}

/// Evaluates the run's last checkpoint on the validation set and every extra set.
pub fn evaluate<B: Backend>(
    prepared: Prepared,
    run_dir: &Path,
    batch_size: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(usize, Vec<Evaluation>)> {
    let objective = prepared.objective();
    match prepared {
        Prepared::Classifier {
            model,
            data,
            seq_len,
        } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let b = ClassificationBatcher {
                seq_len,
                pad: model.pad_token,
            };
            Ok((
                step,
                eval_sets(&m, data, || b.clone(), batch_size, objective, device),
            ))
        }
        Prepared::Pairs {
            model,
            data,
            seq_len,
        } => {
            let (m, step) = load_model(model.init_retrieval::<B>(device), run_dir, device)?;
            let b = PairBatcher {
                seq_len,
                pad: model.pad_token,
            };
            Ok((
                step,
                eval_sets(&m, data, || b.clone(), batch_size, objective, device),
            ))
        }
        Prepared::Lm { model, data, text } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let b = LmBatcher {
                seq_len: model.max_len,
                pad: text.pad(),
            };
            Ok((
                step,
                eval_sets(&m, data, || b.clone(), batch_size, objective, device),
            ))
        }
        Prepared::Image { model, data } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let b = LmBatcher {
                seq_len: model.seq_len(),
                pad: 0,
            };
            Ok((
                step,
                eval_sets(&m, data, || b.clone(), batch_size, objective, device),
            ))
        }
        Prepared::Mlm {
            model,
            data,
            text,
            masking,
        } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let make = || {
                MlmBatcher::fixed(
                    model.max_len,
                    text.pad(),
                    masking.clone(),
                    seed.wrapping_add(VALID_MASK_SEED),
                )
            };
            Ok((
                step,
                eval_sets(&m, data, make, batch_size, objective, device),
            ))
        }
    }
}

fn eval_sets<B, M, I, Bt>(
    model: &M,
    data: Data<I>,
    batcher: impl Fn() -> Bt,
    batch_size: usize,
    objective: Objective,
    device: &B::Device,
) -> Vec<Evaluation>
where
    B: Backend,
    M: InferenceStep<Output = StepOutput<B>>,
    M::Input: Send + Clone + std::fmt::Debug + 'static,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    Bt: Batcher<B, I, M::Input> + 'static,
{
    std::iter::once(("validation".to_string(), data.valid))
        .chain(data.extra)
        .map(|(set, items)| {
            let dl = DataLoaderBuilder::<B, I, M::Input>::new(batcher())
                .batch_size(batch_size)
                .set_device(device.clone())
                .build(items);
            let (loss, count, accuracy) = mean_loss(model, dl);
            let (metric, value) = objective.metric(loss, accuracy);
            Evaluation {
                set,
                loss,
                count,
                metric,
                value,
            }
        })
        .collect()
}

fn mean_loss<B: Backend, M: InferenceStep<Output = StepOutput<B>>>(
    model: &M,
    loader: Arc<dyn DataLoader<B, M::Input>>,
) -> (f64, usize, Option<f64>) {
    let (mut sum, mut n, mut correct) = (0.0, 0usize, None::<usize>);
    for batch in loader.iter() {
        let out = model.step(batch);
        let count = out.count;
        let stats = burn::train::ItemLazy::sync(out);
        sum += stats.loss * count as f64;
        n += count;
        if let Some(c) = stats.correct {
            *correct.get_or_insert(0) += c;
        }
    }
    let n1 = n.max(1) as f64;
    (sum / n1, n, correct.map(|c| c as f64 / n1))
}

/// What `combiner sample` should produce.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    /// Number of samples (images, continuations, examples).
    pub count: usize,
    /// Softmax temperature.
    pub temperature: f64,
    /// Tokens to generate per text sample.
    pub tokens: usize,
    /// Where image samples go.
    pub png: PathBuf,
    /// Seed of the sampler.
    pub seed: u64,
}

/// Samples from the run's last checkpoint: images to a PNG grid; text
/// continuations of validation prompts (LM); filled-in masks (MLM);
/// predicted against true labels of validation examples (classifiers).
/// Returns the text to print.
pub fn sample<B: Backend>(
    prepared: Prepared,
    run_dir: &Path,
    req: &SampleRequest,
    device: &B::Device,
) -> Result<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
    let mut out = String::new();
    match prepared {
        Prepared::Image { model, .. } => {
            anyhow::ensure!(
                model.height == model.width && model.channels == 3,
                "image samples are drawn for square RGB images"
            );
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let images = m.sample(req.count, model.seq_len(), req.temperature, || rng.random());
            let refs: Vec<&[u8]> = images.iter().map(|v| v.as_slice()).collect();
            let cols = combiner::plan::ceil_sqrt(images.len());
            combiner_data::prepare::write_image_grid(&req.png, &refs, model.width, cols)?;
            out.push_str(&format!(
                "{} samples from step {step} written to {}\n",
                images.len(),
                req.png.display()
            ));
        }
        Prepared::Lm { model, data, text } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            let prompt_len = (model.max_len / 4).clamp(1, 64);
            for k in 0..req.count.min(data.valid.len()) {
                let item = data.valid.get(k).context("validation window")?;
                let prompt = &item.tokens[..prompt_len.min(item.tokens.len())];
                let seq = m.sample(prompt, req.tokens, req.temperature, || rng.random());
                out.push_str(&format!(
                    "--- sample {k} (step {step}) ---\n[prompt] {}\n[model] {}\n",
                    text.decode(prompt)?,
                    text.decode(&seq[prompt.len()..])?
                ));
            }
        }
        Prepared::Mlm {
            model,
            data,
            text,
            masking,
        } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            for k in 0..req.count.min(data.valid.len()) {
                let item = data.valid.get(k).context("validation sequence")?;
                let masked = mask_tokens(&item.tokens, &masking, &mut rng);
                let len = masked.inputs.len();
                let ids: Vec<i64> = masked.inputs.iter().map(|&t| t as i64).collect();
                let logits = m.forward(Tensor::from_data(TensorData::new(ids, [1, len]), device));
                let pred: Vec<i64> = logits
                    .argmax(2)
                    .into_data()
                    .convert::<i64>()
                    .to_vec()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let filled: Vec<u32> = (0..len)
                    .map(|i| {
                        if masked.chosen[i] {
                            pred[i] as u32
                        } else {
                            item.tokens[i]
                        }
                    })
                    .collect();
                let hits = (0..len)
                    .filter(|&i| masked.chosen[i] && filled[i] == item.tokens[i])
                    .count();
                let chosen = masked.chosen.iter().filter(|&&c| c).count();
                let show = len.min(200);
                out.push_str(&format!(
                    "--- sequence {k} (step {step}): {hits}/{chosen} masked tokens recovered ---\n[masked] {}\n[filled] {}\n[truth ] {}\n",
                    text.decode(&masked.inputs[..show])?,
                    text.decode(&filled[..show])?,
                    text.decode(&item.tokens[..show])?
                ));
            }
        }
        Prepared::Classifier {
            model,
            data,
            seq_len,
        } => {
            let (m, step) = load_model(model.init::<B>(device), run_dir, device)?;
            out.push_str(&format!(
                "validation examples, step {step}: predicted / true label\n"
            ));
            for k in 0..req.count.min(data.valid.len()) {
                let item = data.valid.get(k).context("validation example")?;
                let batch = Batcher::<B, TokenSequence, _>::batch(
                    &ClassificationBatcher {
                        seq_len,
                        pad: model.pad_token,
                    },
                    vec![item.clone()],
                    device,
                );
                out.push_str(&predicted(m.forward(batch.tokens), k, item.label)?);
            }
        }
        Prepared::Pairs {
            model,
            data,
            seq_len,
        } => {
            let (m, step) = load_model(model.init_retrieval::<B>(device), run_dir, device)?;
            out.push_str(&format!(
                "validation pairs, step {step}: predicted / true label (1 = match)\n"
            ));
            for k in 0..req.count.min(data.valid.len()) {
                let item = data.valid.get(k).context("validation pair")?;
                let batch = Batcher::<B, RetrievalPair, _>::batch(
                    &PairBatcher {
                        seq_len,
                        pad: model.pad_token,
                    },
                    vec![item.clone()],
                    device,
                );
                out.push_str(&predicted(
                    m.encoder.forward_pair(batch.a, batch.b),
                    k,
                    item.label,
                )?);
            }
        }
    }
    Ok(out)
}

fn predicted<B: Backend>(logits: Tensor<B, 2>, k: usize, label: u32) -> Result<String> {
    let p: Vec<f32> = burn::tensor::activation::softmax(logits, 1)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (best, pb) = p
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    Ok(format!(
        "example {k}: predicted {best} (p = {pb:.3}), true {label}{}\n",
        if best as u32 == label { "" } else { "  x" }
    ))
}
