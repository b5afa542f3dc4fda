//! Data-path throughput: CIFAR-10 batches/s (binary decode and batching into
//! burn tensors) and text tokens/s (byte-level, trained BPE, MLM masking).
//!
//! Run with `cargo bench -p combiner-data` (release build, prints
//! median time per call and throughput). Text comes from the shipped
//! WikiText-2 archive when it is present, else from a synthetic corpus.

use std::hint::black_box;

use burn::data::dataloader::batcher::Batcher;
use burn_ndarray::NdArray;
use combiner_data::batcher::{
    ClassificationBatch, ClassificationBatcher, MlmBatch, MlmBatcher, TokenSequence,
};
use combiner_data::cifar::{self, CifarImage};
use combiner_data::text::{ByteTokenizer, MlmConfig, SubwordTokenizer};
use combiner_data::DatasetName;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const BATCH: usize = 64;

/// Runs `f` for about a second after a warm-up and prints the median time
/// per call and `units` per second (`units` = work done by one call).
fn measure<T>(name: &str, units: f64, unit: &str, mut f: impl FnMut() -> T) {
    for _ in 0..3 {
        black_box(f());
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) || times.len() < 5 {
        let t = Instant::now();
        black_box(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{name:<40} {:>10.3} ms/call {:>14.0} {unit}/s  ({} calls)",
        median * 1e3,
        units / median,
        times.len()
    );
}

fn cifar() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let images: Vec<CifarImage> = (0..BATCH * 16)
        .map(|i| CifarImage {
            pixels: (0..cifar::TOKENS).map(|_| rng.random()).collect(),
            label: (i % 10) as u8,
        })
        .collect();
    let bytes = cifar::encode_batch(&images);
    let dev = Default::default();
    let batcher = ClassificationBatcher {
        seq_len: cifar::TOKENS,
        pad: 0,
    };

    measure(
        "cifar10 decode binary (64-image batches)",
        16.0,
        "batches",
        || cifar::parse_batch(std::path::Path::new("mem"), black_box(&bytes)).unwrap(),
    );
    measure(
        "cifar10 batch 64 -> NdArray tensors",
        1.0,
        "batches",
        || {
            let out: ClassificationBatch<NdArray> =
                batcher.batch(black_box(images[..BATCH].to_vec()), &dev);
            out
        },
    );
}

fn corpus() -> String {
    let dir = combiner_data::shared_data_dir();
    let archive = dir.join(DatasetName::Wikitext2.shipped_archive());
    if archive.exists() {
        let tmp = tempfile::tempdir().unwrap();
        if combiner_data::prepare(DatasetName::Wikitext2, &archive, tmp.path(), |_, _| {}).is_ok() {
            let p = tmp.path().join("wikitext-2/wiki.valid.tokens");
            return std::fs::read_to_string(p).unwrap();
        }
    }
    let words = [
        "the",
        "attention",
        "of",
        "combiner",
        "is",
        "sparse",
        "and",
        "full",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    (0..200_000)
        .map(|_| words[rng.random_range(0..words.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn text() {
    let text = corpus();
    let sample = &text[..text.len().min(200_000)];
    let bytes = ByteTokenizer;
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let bpe =
        SubwordTokenizer::train(lines.iter(), 8000, &tmp.path().join("tokenizer.json")).unwrap();
    let bpe_tokens = bpe.encode(sample).unwrap().len() as u64;

    measure(
        "text byte-level encode",
        sample.len() as f64,
        "tokens",
        || bytes.encode(black_box(sample.as_bytes())),
    );
    measure("text BPE-8k encode", bpe_tokens as f64, "tokens", || {
        bpe.encode(black_box(sample)).unwrap()
    });

    let items: Vec<TokenSequence> = bytes
        .encode(text.as_bytes())
        .chunks(2048)
        .take(BATCH)
        .map(|c| TokenSequence {
            tokens: c.to_vec(),
            label: 0,
        })
        .collect();
    let mlm = MlmBatcher::new(2048, ByteTokenizer::PAD, MlmConfig::bytes(), 0);
    let dev = Default::default();
    measure(
        "text MLM batch 64x2048",
        (BATCH * 2048) as f64,
        "tokens",
        || {
            let out: MlmBatch<NdArray> = mlm.batch(black_box(items.clone()), &dev);
            out
        },
    );
}

fn main() {
    cifar();
    text();
}
