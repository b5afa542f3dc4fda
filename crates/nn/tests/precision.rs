//! Mixed precision on the CPU. ndarray has no bf16, but it has f64, and it
//! refuses to mix dtypes in one op: running every attention's compute copy
//! in f64 on an f32 model checks that every cast is where it belongs (a
//! missing one panics), that outputs and gradients come back in the master
//! dtype, and that the result matches the f32 model.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType};
use burn_ndarray::NdArray;
use combiner::Mode;
use combiner_attention::AttentionConfig;
use combiner_nn::precision::{grads_to_master, to_compute, Precision};
use combiner_nn::TrunkConfig;

type AD = Autodiff<NdArray<f32>>;
type Inner = NdArray<f32>;

fn configs() -> Vec<AttentionConfig> {
    let mut all = AttentionConfig::examples();
    let learned = combiner::Plan::AxialRowmajor {
        grid: None,
        summary: combiner::RowSummary::Learned,
    };
    for (name, plan) in combiner::Plan::all()
        .into_iter()
        .chain([("learned", learned)])
    {
        for abstraction in [
            combiner::AbstractionKind::Max,
            combiner::AbstractionKind::DeepSetsMean,
        ] {
            // the learned summary replaces DeepSets' pooled keys: refused
            if name == "learned" && abstraction != combiner::AbstractionKind::Max {
                continue;
            }
            all.push(AttentionConfig::Combiner {
                plan: plan.clone(),
                abstraction,
            });
        }
    }
    all
}

/// Every float parameter: (id, dtype, gradient as host values).
fn grads_of(model: &impl Module<AD>, grads: &GradientsParams) -> Vec<(String, DType, Vec<f32>)> {
    struct V<'a>(&'a GradientsParams, Vec<(String, DType, Vec<f32>)>);
    impl ModuleVisitor<AD> for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            if let Some(g) = self.0.get::<Inner, D>(p.id) {
                let dtype = g.dtype();
                let values = g.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap();
                self.1.push((p.id.to_string(), dtype, values));
            }
        }
    }
    let mut v = V(grads, vec![]);
    model.visit(&mut v);
    v.1
}

fn param_dtypes(model: &impl Module<AD>) -> Vec<DType> {
    struct V(Vec<DType>);
    impl ModuleVisitor<AD> for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            self.0.push(p.val().dtype());
        }
    }
    let mut v = V(vec![]);
    model.visit(&mut v);
    v.0
}

#[test]
fn every_attention_runs_in_a_lower_compute_dtype_with_f32_master_weights() {
    let dev = Default::default();
    let (batch, len, d) = (2, 13, 16);
    let mut failures = vec![];
    for attention in configs() {
        for mode in [Mode::Lm, Mode::Mlm] {
            if !attention.supports(mode) {
                continue;
            }
            let name = format!("{attention:?} {mode:?}");
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut failures = vec![];
                <AD as Backend>::seed(&dev, 7);
                let trunk = TrunkConfig {
                    d_model: d,
                    n_heads: 2,
                    n_layers: 2,
                    d_ff: 32,
                    dropout: 0.0,
                    attention_dropout: 0.0,
                    attention: attention.clone(),
                }
                .init::<AD>(mode, &dev);
                let x =
                    Tensor::<AD, 3>::random([batch, len, d], Distribution::Normal(0.0, 1.0), &dev);
                let master_dtypes = param_dtypes(&trunk);

                let y32 = trunk.forward(x.clone());
                let g32 = GradientsParams::from_grads(
                    y32.clone().powf_scalar(2.0).mean().backward(),
                    &trunk,
                );

                let copy = to_compute(trunk.clone(), Some(FloatDType::F64));
                let copy_dtypes = param_dtypes(&copy);
                let y = copy.forward(x);
                let mut g = GradientsParams::from_grads(
                    y.clone().powf_scalar(2.0).mean().backward(),
                    &copy,
                );
                let low = grads_of(&copy, &g);
                grads_to_master(&trunk, &mut g);
                let back = grads_of(&trunk, &g);
                let g32 = grads_of(&trunk, &g32);

                let diff: f32 = (y.clone() - y32).abs().max().into_scalar().elem();
                let checks = [
                    (
                        y.dtype() == DType::F32,
                        "the output is in the stream dtype (f32)".to_string(),
                    ),
                    (
                        diff < 1e-4,
                        format!("the output matches f32 (max diff {diff:e})"),
                    ),
                    (
                        copy_dtypes.contains(&DType::F64) && copy_dtypes.contains(&DType::F32),
                        "the copy holds block Linear weights in f64 and norms/embeddings in f32"
                            .into(),
                    ),
                    (
                        master_dtypes.iter().all(|&t| t == DType::F32)
                            && param_dtypes(&trunk) == master_dtypes,
                        "master weights stay f32".into(),
                    ),
                    (
                        low.iter().any(|(_, t, _)| *t == DType::F64),
                        "the copy's Linear gradients come in the compute dtype".into(),
                    ),
                    (
                        back.iter().all(|(_, t, _)| *t == DType::F32),
                        "every gradient is cast to its master's dtype".into(),
                    ),
                    (
                        back.len() == g32.len(),
                        format!("{} gradients, f32 run has {}", back.len(), g32.len()),
                    ),
                ];
                for (ok, what) in checks {
                    if !ok {
                        failures.push(format!("{name}: {what}"));
                    }
                }
                for ((id, _, a), (id32, _, b)) in back.iter().zip(&g32) {
                    assert_eq!(id, id32);
                    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                    let worst = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    if worst > 1e-3 * scale {
                        failures.push(format!(
                            "{name}: gradient {id} differs by {worst:e} (scale {scale:e})"
                        ));
                        break;
                    }
                }
                failures
            }));
            match run {
                Ok(f) => failures.extend(f),
                Err(e) => failures.push(format!(
                    "{name}: panicked: {}",
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn precision_names_parse_and_map_to_dtypes() {
    #[derive(serde::Deserialize)]
    struct T {
        precision: Precision,
    }
    for (name, dtype) in [
        ("f32", None),
        ("bf16", Some(FloatDType::BF16)),
        ("f16", Some(FloatDType::F16)),
    ] {
        let p: T = toml::from_str(&format!("precision = \"{name}\"")).unwrap();
        assert_eq!(p.precision.compute_dtype(), dtype);
        assert_eq!(p.precision.name(), name);
    }
    assert!(toml::from_str::<T>("precision = \"fp8\"").is_err());
}
