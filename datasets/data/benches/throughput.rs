//! Data-path throughput: CIFAR-10 batches/s (binary decode and batching into
//! burn tensors) and text tokens/s (byte-level, trained BPE, MLM masking).
//!
//! Run with `cargo bench -p combiner-data`. Text comes from the shipped
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
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};

const BATCH: usize = 64;

fn cifar(c: &mut Criterion) {
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

    let mut g = c.benchmark_group("cifar10");
    g.throughput(Throughput::Elements(16));
    g.bench_function("decode binary, batches of 64", |b| {
        b.iter(|| cifar::parse_batch(std::path::Path::new("mem"), black_box(&bytes)).unwrap())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch of 64 to NdArray tensors", |b| {
        b.iter(|| {
            let out: ClassificationBatch<NdArray> =
                batcher.batch(black_box(images[..BATCH].to_vec()), &dev);
            out
        })
    });
    g.finish();
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

fn text(c: &mut Criterion) {
    let text = corpus();
    let sample = &text[..text.len().min(200_000)];
    let bytes = ByteTokenizer;
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let bpe =
        SubwordTokenizer::train(lines.iter(), 8000, &tmp.path().join("tokenizer.json")).unwrap();
    let bpe_tokens = bpe.encode(sample).unwrap().len() as u64;

    let mut g = c.benchmark_group("text");
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.bench_function("byte-level encode (tokens)", |b| {
        b.iter(|| bytes.encode(black_box(sample.as_bytes())))
    });
    g.throughput(Throughput::Elements(bpe_tokens));
    g.bench_function("BPE-8k encode (tokens)", |b| {
        b.iter(|| bpe.encode(black_box(sample)).unwrap())
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
    g.throughput(Throughput::Elements((BATCH * 2048) as u64));
    g.bench_function("MLM batch 64x2048 (tokens)", |b| {
        b.iter(|| {
            let out: MlmBatch<NdArray> = mlm.batch(black_box(items.clone()), &dev);
            out
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = cifar, text
}
criterion_main!(benches);
