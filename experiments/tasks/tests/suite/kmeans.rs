//! Online k-means runs during training: the centroids of Routing attention
//! move, stay on the unit sphere, keep balanced assignments, are saved with
//! the checkpoints, and a resumed run reproduces them.

use std::path::Path;

use burn::backend::Autodiff;
use burn_ndarray::NdArray;
use combiner::Mode;
use combiner_attention::{AttentionConfig, RoutingConfig};
use combiner_data::TokenSequence;
use combiner_models::lra::{LraConfig, Pooling};
use combiner_nn::TrunkConfig;
use combiner_tasks::config::TrainSettings;
use combiner_tasks::family::{self, load_model, Data, FitPlan, Prepared};
use combiner_train::FitOptions;

type B = NdArray<f32>;

fn model() -> LraConfig {
    LraConfig {
        trunk: TrunkConfig {
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            d_ff: 32,
            dropout: 0.0,
            attention_dropout: 0.0,
            attention: AttentionConfig::Routing(RoutingConfig {
                clusters: 4,
                decay: 0.5,
            }),
        },
        vocab_size: 16,
        max_len: 16,
        classes: 2,
        pooling: Pooling::Mean,
        pad_token: 0,
    }
}

fn prepared() -> Prepared {
    let items: Vec<TokenSequence> = (0..8u32)
        .map(|k| TokenSequence {
            tokens: (0..16).map(|i| 1 + (i * 7 + k * 3) % 15).collect(),
            label: k % 2,
        })
        .collect();
    Prepared::Classifier {
        model: model(),
        data: Data::new(items.clone(), items),
        seq_len: 16,
    }
}

fn train(dir: &Path, resume: bool, stop_after: Option<usize>) {
    // the same initial weights in every run (the backend's global generator)
    <Autodiff<B> as burn::tensor::backend::Backend>::seed(&Default::default(), 3);
    let s = TrainSettings {
        steps: 8,
        batch_size: 2,
        grad_accumulation: 1,
        lr: 1e-3,
        warmup: 0,
        final_lr_fraction: 1.0,
        schedule: Default::default(),
        weight_decay: 0.0,
        grad_clip: None,
        checkpoint_every: 4,
        keep_checkpoints: 2,
        seed: 3,
        precision: Default::default(),
    };
    let plan = FitPlan {
        settings: s,
        devices: vec![Default::default()],
        opts: FitOptions {
            run_dir: dir.to_path_buf(),
            steps: 8,
            checkpoint_every: 4,
            keep_checkpoints: 2,
            grad_accumulation: 1,
            batch_size: 2,
            resume,
            stop_after,
            objective: combiner_nn::Objective::Classification,
            dashboard: false,
            compute_dtype: None,
        },
    };
    family::train::<Autodiff<B>>(prepared(), plan).expect("training runs");
}

fn centroids(dir: &Path) -> Vec<Vec<f32>> {
    let dev = Default::default();
    let (m, step) = load_model(model().init::<B>(&dev), dir, &dev).unwrap();
    assert_eq!(step, 8);
    m.trunk()
        .centroids()
        .into_iter()
        .map(|c| c.into_data().convert::<f32>().to_vec().unwrap())
        .collect()
}

#[test]
fn routing_centroids_move_in_training_stay_balanced_and_resume_reproduces_them() {
    let straight = tempfile::tempdir().unwrap();
    train(straight.path(), false, None);
    let trained = centroids(straight.path());

    let dev = Default::default();
    let fresh = model().init::<B>(&dev);
    let initial: Vec<Vec<f32>> = fresh
        .trunk()
        .centroids()
        .into_iter()
        .map(|c| c.into_data().convert::<f32>().to_vec().unwrap())
        .collect();
    assert_eq!(trained.len(), 2, "one centroid set per layer");
    for (a, b) in trained.iter().zip(&initial) {
        let moved: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
        assert!(moved > 1e-3, "centroids did not move: {moved}");
        // unit length per centroid (d_head = 8)
        for c in a.chunks(8) {
            let n: f32 = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "centroid norm {n}");
        }
    }

    let resumed = tempfile::tempdir().unwrap();
    train(resumed.path(), false, Some(4));
    train(resumed.path(), true, None);
    let again = centroids(resumed.path());
    for (a, b) in trained.iter().zip(&again) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() < 1e-5,
                "resume changed the centroids: {x} vs {y}"
            );
        }
    }
    assignments_within_capacity(&trained);
}

/// Balanced routing over the trained centroids of the first head: no
/// cluster holds more than `ceil(len / clusters)` tokens.
fn assignments_within_capacity(trained: &[Vec<f32>]) {
    let (len, n, d) = (16usize, 4usize, 8usize);
    // scores of 16 keys against the first head's trained centroids
    let c = &trained[0][..n * d];
    let keys: Vec<f32> = (0..len * d)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0)
        .collect();
    let scores: Vec<f32> = (0..len)
        .flat_map(|t| {
            let keys = &keys;
            (0..n).map(move |k| (0..d).map(|j| keys[t * d + j] * c[k * d + j]).sum::<f32>())
        })
        .collect();
    for mode in [Mode::Lm, Mode::Mlm] {
        let ids = combiner_attention::routing::balanced_clusters(&scores, len, n, mode);
        let cap = len.div_ceil(n);
        for k in 0..n {
            let count = ids.iter().filter(|&&i| i == k).count();
            assert!(count <= cap, "cluster {k} holds {count} > {cap} tokens");
        }
    }
}
