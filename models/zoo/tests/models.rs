//! Every model family: shapes, a uniform image model scores 8 bits/dim, and
//! each model overfits two fixed batches (loss falls below a stated bound).

use burn::backend::Autodiff;
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{AdamConfig, Optimizer};
use burn::prelude::*;
use burn::train::TrainStep;
use burn_ndarray::NdArray;
use combiner::{Grid, Plan};
use combiner_attention::AttentionConfig;
use combiner_data::batcher::{LmBatch, MlmBatch};
use combiner_models::image_ar::{ImageAr, ImageArConfig, START};
use combiner_models::lm::LmConfig;
use combiner_models::mlm::MlmConfig;
use combiner_nn::{StepOutput, TrunkConfig};

type B = Autodiff<NdArray<f32>>;

fn trunk(attention: AttentionConfig) -> TrunkConfig {
    TrunkConfig {
        d_model: 32,
        n_heads: 2,
        n_layers: 2,
        d_ff: 64,
        dropout: 0.0,
        attention_dropout: 0.0,
        attention,
    }
}

fn axial(rows: usize, cols: usize) -> AttentionConfig {
    AttentionConfig::Combiner {
        plan: Plan::AxialRowmajor {
            grid: Some(Grid { rows, cols }),
            summary: Default::default(),
        },
        abstraction: Default::default(),
    }
}

fn ints(v: Vec<i64>, rows: usize, cols: usize) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v, [rows, cols]), &Default::default())
}

/// A 4 x 4 RGB image batch: two images, inputs = [START, values[..47]], targets = values.
fn image_batch() -> LmBatch<B> {
    let (mut inputs, mut targets) = (vec![], vec![]);
    for img in 0..2i64 {
        let values: Vec<i64> = (0..48).map(|k| (k * 37 + img * 101) % 256).collect();
        inputs.push(START as i64);
        inputs.extend(&values[..47]);
        targets.extend(&values);
    }
    LmBatch {
        inputs: ints(inputs, 2, 48),
        targets: ints(targets, 2, 48),
    }
}

struct Zero;
impl<BB: Backend> ModuleMapper<BB> for Zero {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<BB, D>>) -> Param<Tensor<BB, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.zeros_like(), mapper)
    }
}

/// A 4 x 4 RGB image model with Combiner-Axial blocks.
fn image_model(dev: &burn::tensor::Device<B>) -> ImageAr<B> {
    ImageArConfig {
        trunk: trunk(axial(4, 12)),
        height: 4,
        width: 4,
        channels: 3,
    }
    .init::<B>(dev)
}

#[test]
fn a_uniform_image_model_scores_8_bits_per_dim() {
    let dev = Default::default();
    let model = image_model(&dev);
    // all weights zero: every logit is 0, the output distribution is uniform over 256 values
    let model = model.map(&mut Zero);
    let out = model.forward_step(image_batch());
    let loss: f64 = out.loss.into_scalar().elem();
    let bits = loss / std::f64::consts::LN_2;
    assert!((bits - 8.0).abs() < 1e-5, "uniform model: {bits} bits/dim");
    assert_eq!(out.count, 2 * 48);
}

fn overfit<M, I: Clone>(mut model: M, batches: &[I], steps: usize, lr: f64) -> (f64, f64)
where
    M: TrainStep<Input = I, Output = StepOutput<B>> + burn::module::AutodiffModule<B>,
{
    let mut optim = AdamConfig::new().init::<B, M>();
    let mut first = None;
    let mut last = 0.0;
    for s in 0..steps {
        let out = model.step(batches[s % batches.len()].clone());
        let loss: f64 = out.item.loss.clone().into_scalar().elem();
        first.get_or_insert(loss);
        last = loss;
        model = optim.step(lr, model, out.grads);
    }
    (first.unwrap(), last)
}

#[test]
fn image_model_overfits_two_images_with_combiner_axial() {
    B::seed(&Default::default(), 1);
    let model = image_model(&Default::default());
    let (first, last) = overfit(model, &[image_batch()], 150, 3e-3);
    let bits = last / std::f64::consts::LN_2;
    assert!(
        first / std::f64::consts::LN_2 > 7.0,
        "starts near 8 bits/dim: {first}"
    );
    assert!(
        bits < 1.0,
        "memorizes two images to below 1 bit/dim, got {bits} (start {first})"
    );
}

fn text_batch(shift: i64) -> LmBatch<B> {
    let seq: Vec<i64> = (0..2 * 33).map(|k| (k * 5 + shift) % 23 + 1).collect();
    let (mut inputs, mut targets) = (vec![], vec![]);
    for r in 0..2 {
        inputs.extend(&seq[r * 33..r * 33 + 32]);
        targets.extend(&seq[r * 33 + 1..r * 33 + 33]);
    }
    LmBatch {
        inputs: ints(inputs, 2, 32),
        targets: ints(targets, 2, 32),
    }
}

#[test]
fn language_model_overfits_two_batches() {
    B::seed(&Default::default(), 2);
    let att = AttentionConfig::Combiner {
        plan: Plan::Fixed { block: Some(5) },
        abstraction: Default::default(),
    };
    let model = LmConfig {
        trunk: trunk(att),
        vocab_size: 24,
        max_len: 32,
    }
    .init::<B>(&Default::default());
    let (first, last) = overfit(model, &[text_batch(0), text_batch(3)], 120, 3e-3);
    assert!(first > 2.5, "starts near ln 24: {first}");
    assert!(
        last < 0.2,
        "perplexity near 1 on memorized text, loss {last} (start {first})"
    );
}

#[test]
fn masked_language_model_overfits_two_batches_and_scores_only_masked_tokens() {
    B::seed(&Default::default(), 3);
    let att = AttentionConfig::Combiner {
        plan: Plan::Logsparse,
        abstraction: Default::default(),
    };
    let model = MlmConfig {
        trunk: trunk(att),
        vocab_size: 25,
        max_len: 32,
    }
    .init::<B>(&Default::default());
    let batch = |shift: i64| {
        let t = text_batch(shift);
        let targets = t.targets.clone();
        let mask: Tensor<B, 2, Bool> = Tensor::<B, 1, Int>::arange(0..64, &Default::default())
            .reshape([2, 32])
            .remainder_scalar(4)
            .equal_elem(1);
        let inputs = targets.clone().mask_fill(mask.clone(), 24); // 24 = [MASK]
        MlmBatch {
            inputs,
            targets,
            mask,
        }
    };
    let b0 = batch(0);
    let out = model.forward_step(b0.clone());
    assert_eq!(out.count, 16, "the loss counts the 16 masked tokens");
    let (first, last) = overfit(model, &[b0, batch(3)], 120, 3e-3);
    assert!(first > 2.5, "starts near ln 25: {first}");
    assert!(
        last < 0.2,
        "masked tokens recovered, loss {last} (start {first})"
    );
}

#[test]
fn image_sampling_yields_full_images() {
    let dev = Default::default();
    let model = ImageArConfig {
        trunk: trunk(axial(2, 6)),
        height: 2,
        width: 2,
        channels: 3,
    }
    .init::<NdArray<f32>>(&dev);
    let mut x = 0.1f64;
    let images = model.sample(3, 12, 1.0, move || {
        x = (x * 9301.0 + 0.49297) % 1.0;
        x
    });
    assert_eq!(images.len(), 3);
    assert!(images.iter().all(|im| im.len() == 12));
}

/// The floating-point parameter dtypes of `model`.
fn dtypes<M: Module<B>>(model: &M) -> Vec<burn::tensor::DType> {
    struct V(Vec<burn::tensor::DType>);
    impl burn::module::ModuleVisitor<B> for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(p.val().dtype());
        }
    }
    let mut v = V(vec![]);
    model.visit(&mut v);
    v.0
}

/// A mixed-precision copy (f64 stands in for bf16: ndarray refuses
/// mixed-dtype operations, so a missing cast fails) holds the block
/// `Linear` weights and the output head in the compute dtype, everything
/// else in f32, and gives the f32 model's logits, in f32.
#[test]
fn the_compute_copy_runs_blocks_and_head_in_the_compute_dtype() {
    use burn::tensor::{DType, FloatDType};
    use combiner_nn::precision::to_compute;
    let dev = Default::default();
    let model = image_model(&dev);
    // burn initializes parameters lazily: read them once, so that the copy
    // starts from the same values
    assert!(dtypes(&model).iter().all(|&d| d == DType::F32));
    let copy = to_compute(model.clone(), Some(FloatDType::F64));
    let low = dtypes(&copy);
    // two blocks of six Linear layers (q, k, v, output, fc1, fc2) with a
    // bias each, and the head's weight and bias
    let compute = low.iter().filter(|&&d| d == DType::F64).count();
    assert_eq!(compute, 2 * 6 * 2 + 2, "{low:?}");
    let inputs = image_batch().inputs;
    let want = model.forward(inputs.clone());
    let got = copy.forward(inputs);
    assert_eq!(got.dtype(), DType::F32);
    let diff: f32 = (got - want).abs().max().into_scalar().elem();
    assert!(diff < 1e-4, "logits differ from f32 by {diff}");
}
