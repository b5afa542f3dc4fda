//! A seeded corruption sweep over every reader: each file is read whole,
//! then truncated at many offsets and with flipped bytes. A damaged file may
//! still parse (a flipped letter inside a text) but must never panic, and
//! every error names the file. Damaged archives (xz, zip) must be errors.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::testutil;
use crate::{cifar, imagenet, listops, retrieval, text};

/// Reads `path` with the reader under test; only the outcome matters.
type Reader = dyn Fn(&Path) -> crate::Result<()>;

/// Offsets to cut at and bytes to flip: both ends and seeded middles.
fn damage_points(len: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cuts = vec![0, 1, len / 2, len.saturating_sub(1)];
    cuts.extend((0..20).map(|_| rng.random_range(0..len)));
    let flips = (0..24).map(|_| rng.random_range(0..len)).collect();
    (cuts, flips)
}

/// Reads `valid` (must succeed), then every damaged version of it written
/// to a file named `name`; `strict`: every damaged version must be an error.
fn sweep(name: &str, valid: &[u8], read: &Reader, strict: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, valid).unwrap();
    read(&path).unwrap_or_else(|e| panic!("{name}: the undamaged file fails: {e}"));
    let (cuts, flips) = damage_points(valid.len(), name.len() as u64);
    let mut cases: Vec<(String, Vec<u8>)> = cuts
        .into_iter()
        .filter(|&c| c < valid.len())
        .map(|c| (format!("truncated to {c} bytes"), valid[..c].to_vec()))
        .collect();
    for f in flips {
        let mut bytes = valid.to_vec();
        bytes[f] ^= 0xA5;
        cases.push((format!("byte {f} flipped"), bytes));
    }
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| read(&path)));
        match outcome {
            Err(_) => panic!("{name} {what}: the reader panicked"),
            Ok(Err(e)) => assert!(
                e.to_string().contains(name),
                "{name} {what}: the error does not name the file: {e}"
            ),
            Ok(Ok(())) => assert!(!strict, "{name} {what}: damage went unnoticed"),
        }
    }
}

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn cifar_binary_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bin");
    let images: Vec<cifar::CifarImage> = (0..3)
        .map(|i| cifar::CifarImage {
            pixels: (0..3072).map(|t| (t * 7 + i) as u8).collect(),
            label: i as u8,
        })
        .collect();
    cifar::write_batch(&path, &images).unwrap();
    sweep(
        "data_batch_1.bin",
        &bytes_of(&path),
        &|p| cifar::read_batch(p).map(drop),
        false,
    );
}

#[test]
fn cifar_jpeg_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.tar.xz");
    let mut members = Vec::new();
    for split in ["test", "train"] {
        for class in cifar::CLASSES {
            members.push((
                format!("{split}/{class}/0000.jpg"),
                testutil::jpeg(32, 32, 3, 3),
            ));
        }
    }
    testutil::write_tar_xz(&path, &members);
    sweep(
        "cifar10-jpeg.tar.xz",
        &bytes_of(&path),
        &|p| cifar::read_jpeg_archive_splits(p, &mut |_, _| {}).map(drop),
        true,
    );
}

#[test]
fn imagenet_npz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let images: Vec<imagenet::Image64> = (0..2)
        .map(|i| imagenet::Image64 {
            pixels: (0..12288).map(|t| (t * 31 + i) as u8).collect(),
            label: i as u32,
        })
        .collect();
    imagenet::write_npz(&path, &images).unwrap();
    sweep(
        "train_data_batch_1.npz",
        &bytes_of(&path),
        &|p| imagenet::read_npz(p, 1000).map(drop),
        false,
    );
}

#[test]
fn tiny_imagenet_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.tar.xz");
    let members = vec![
        (
            "tiny-imagenet-200/val/images/val_0.JPEG".to_string(),
            testutil::jpeg(64, 64, 3, 5),
        ),
        (
            "tiny-imagenet-200/val/val_annotations.txt".to_string(),
            b"val_0.JPEG\tn01\t0\t0\t1\t1\n".to_vec(),
        ),
        ("tiny-imagenet-200/wnids.txt".to_string(), b"n01\n".to_vec()),
    ];
    testutil::write_tar_xz(&path, &members);
    sweep(
        "tiny-imagenet-val.tar.xz",
        &bytes_of(&path),
        &|p| imagenet::read_tiny_imagenet(p, &mut |_, _| {}).map(drop),
        true,
    );
}

#[test]
fn imdb_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.tar.xz");
    let members = vec![
        (
            "aclImdb/train/pos/0_9.txt".to_string(),
            b"a fine film".to_vec(),
        ),
        (
            "aclImdb/test/neg/1_2.txt".to_string(),
            b"a dull film".to_vec(),
        ),
    ];
    testutil::write_tar_xz(&path, &members);
    sweep(
        "imdb.tar.xz",
        &bytes_of(&path),
        &|p| text::readers::read_imdb_archive(p, &mut |_, _| {}).map(drop),
        true,
    );
}

#[test]
fn text_files_json_lines_and_tsv() {
    let jsonl = b"{\"text\": \"first document\"}\n{\"text\": \"second \\u00e9 one\"}\n";
    sweep(
        "c4.jsonl",
        jsonl,
        &|p| text::readers::read_jsonl_texts(p).map(drop),
        false,
    );
    sweep(
        "wiki.test.tokens",
        "= Title =\n caf\u{e9} and more text \n".as_bytes(),
        &|p| text::Wikitext::read(p).map(drop),
        false,
    );
    sweep(
        "basic_test.tsv",
        b"Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( [SM 5 7 ] )\t2\n",
        &|p| listops::ListOps::read_tsv(p).map(drop),
        false,
    );
    sweep(
        "new_aan_pairs.eval.tsv",
        b"1\tP1\tP2\tabc\tdef\n0.0\tP3\tP4\tx\ty\n",
        &|p| retrieval::read_aan_tsv(p, 8).map(drop),
        false,
    );
}

#[test]
fn tokenizer_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let texts = ["the cat sat on the mat", "a dog ran in the fog"];
    text::SubwordTokenizer::train(texts.iter().copied(), 60, &path).unwrap();
    sweep(
        "tokenizer.json",
        &bytes_of(&path),
        &|p| text::SubwordTokenizer::load(p).map(drop),
        false,
    );
}
