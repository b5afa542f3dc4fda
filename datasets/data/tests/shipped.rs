//! Tests on the real archives in `shared/data` (see its README for the
//! figures checked here). Where the archives are missing the tests print a
//! skip notice, except under CI (`CI=true`), where they fail.

use std::path::{Path, PathBuf};

use combiner_data::cifar::{self, CLASSES};
use combiner_data::imagenet::read_tiny_imagenet;
use combiner_data::text::readers::{parse_wiki_docs, read_imdb_archive};
use combiner_data::text::SubwordTokenizer;
use combiner_data::{prepare, verify, Checksums, DatasetName, Split};

fn shared() -> Option<PathBuf> {
    let dir = combiner_data::shared_data_dir();
    if dir.join("SHA256SUMS").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "shipped data not found at {} (set {} to the folder holding SHA256SUMS and the *.tar.xz archives)",
        dir.display(),
        combiner_data::SHARED_DATA_ENV
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn archive(dir: &Path, name: DatasetName) -> PathBuf {
    dir.join(name.shipped_archive())
}

#[test]
fn every_shipped_archive_matches_sha256sums_and_the_builtin_table() {
    let Some(dir) = shared() else { return };
    let sums = Checksums::read(&dir.join("SHA256SUMS")).unwrap();
    for name in DatasetName::ALL {
        let path = archive(&dir, name);
        sums.verify(&path).unwrap();
        assert_eq!(
            sums.entries[name.shipped_archive()],
            name.shipped_sha256(),
            "{name}"
        );
    }
}

#[test]
fn cifar_test_split_has_1000_images_per_class() {
    let Some(dir) = shared() else { return };
    let images = cifar::read_jpeg_archive(
        &archive(&dir, DatasetName::Cifar10),
        Split::Test,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(images.len(), 10_000);
    let mut counts = [0usize; 10];
    for img in &images {
        assert_eq!(img.pixels.len(), 3072);
        counts[img.label as usize] += 1;
    }
    assert_eq!(counts, [1000; CLASSES.len()]);
    // Real photographs: sub-pixels use most of the range and are not constant.
    let mean = images
        .iter()
        .flat_map(|i| &i.pixels)
        .map(|&p| p as f64)
        .sum::<f64>()
        / (10_000.0 * 3072.0);
    assert!((80.0..180.0).contains(&mean), "mean sub-pixel {mean}");
    // Binary round trip of real pixels.
    let bytes = cifar::encode_batch(&images[..100]);
    assert_eq!(
        cifar::parse_batch(Path::new("mem"), &bytes).unwrap(),
        images[..100]
    );
}

#[test]
fn imdb_has_12500_reviews_per_label_and_split() {
    let Some(dir) = shared() else { return };
    let (train, test) =
        read_imdb_archive(&archive(&dir, DatasetName::Imdb), &mut |_, _| {}).unwrap();
    for reviews in [&train, &test] {
        assert_eq!(reviews.len(), 25_000);
        assert_eq!(reviews.iter().filter(|r| r.label == 1).count(), 12_500);
    }
    let bytes: usize = train.iter().chain(&test).map(|r| r.text.len()).sum();
    assert_eq!(bytes, 65_483_508);
}

#[test]
fn wikipedia_slice_has_6514_documents() {
    let Some(dir) = shared() else { return };
    let path = archive(&dir, DatasetName::Wikipedia);
    let mut docs = 0;
    let mut empty = 0;
    let mut files = 0;
    combiner_data::archive::for_each_member(&path, &mut |_, _| {}, |name, bytes| {
        let text = String::from_utf8(bytes).expect("shipped text is UTF-8");
        let parsed = parse_wiki_docs(Path::new(name), &text)?;
        docs += parsed.len();
        empty += parsed.iter().filter(|d| d.text.is_empty()).count();
        files += 1;
        Ok(combiner_data::archive::Flow::Continue)
    })
    .unwrap();
    assert_eq!((files, docs, empty), (100, 6514, 4));
}

#[test]
fn wikitext_prepare_verify_and_counts() {
    let Some(dir) = shared() else { return };
    let data = tempfile::tempdir().unwrap();
    for (name, valid_bytes) in [
        (DatasetName::Wikitext2, 1_121_681u64),
        (DatasetName::Wikitext103, 1_142_309),
    ] {
        let out = prepare(name, &archive(&dir, name), data.path(), |_, _| {}).unwrap();
        assert_eq!(
            std::fs::metadata(out.join("wiki.valid.tokens"))
                .unwrap()
                .len(),
            valid_bytes
        );
        let valid = combiner_data::text::Wikitext::load(data.path(), name, Split::Valid).unwrap();
        let test = combiner_data::text::Wikitext::load(data.path(), name, Split::Test).unwrap();
        assert_eq!(
            (valid.lines.len(), valid.token_count()),
            (3760, 217_646),
            "{name}"
        );
        assert_eq!(
            (test.lines.len(), test.token_count()),
            (4358, 245_569),
            "{name}"
        );
    }
    let report = verify(data.path()).unwrap();
    assert!(report.is_ok() && report.entries.len() == 2, "{report}");
}

#[test]
fn subword_tokenizer_trained_on_wikitext_valid_round_trips_test() {
    let Some(dir) = shared() else { return };
    let data = tempfile::tempdir().unwrap();
    prepare(
        DatasetName::Wikitext2,
        &archive(&dir, DatasetName::Wikitext2),
        data.path(),
        |_, _| {},
    )
    .unwrap();
    let valid =
        combiner_data::text::Wikitext::load(data.path(), DatasetName::Wikitext2, Split::Valid)
            .unwrap();
    let test =
        combiner_data::text::Wikitext::load(data.path(), DatasetName::Wikitext2, Split::Test)
            .unwrap();
    let tok = SubwordTokenizer::train(
        valid.lines.iter(),
        2000,
        &data.path().join("tokenizer.json"),
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 2000);
    let held_out = test.lines[..200].join("\n");
    let ids = tok.encode(&held_out).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), held_out);
    // Subwords compress: fewer ids than bytes by a wide margin.
    assert!(
        ids.len() * 2 < held_out.len(),
        "{} ids for {} bytes",
        ids.len(),
        held_out.len()
    );
}

#[test]
fn tiny_imagenet_val_has_50_images_for_each_of_200_classes() {
    let Some(dir) = shared() else { return };
    let t =
        read_tiny_imagenet(&archive(&dir, DatasetName::TinyImagenetVal), &mut |_, _| {}).unwrap();
    assert_eq!(t.wnids.len(), 200);
    assert_eq!(t.images.len(), 10_000);
    let mut counts = vec![0usize; 200];
    for img in &t.images {
        counts[img.label as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 50));
    // 168 val images are gray JPEGs, replicated into equal R, G and B.
    let gray = t
        .images
        .iter()
        .filter(|i| i.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]))
        .count();
    assert!(gray >= 168, "{gray}");
}

#[test]
fn truncated_copy_of_a_shipped_archive_fails_checksum_then_decoding() {
    let Some(dir) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(archive(&dir, DatasetName::Wikitext2)).unwrap();
    // Under its shipped name the built-in checksum catches the damage first.
    let copy = tmp.path().join(DatasetName::Wikitext2.shipped_archive());
    std::fs::write(&copy, &bytes[..bytes.len() / 2]).unwrap();
    let err = prepare(
        DatasetName::Wikitext2,
        &copy,
        &tmp.path().join("d"),
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, combiner_data::DataError::Checksum { .. }),
        "{err}"
    );
    // Under another name it is decoded, and the decoder reports the truncation.
    let renamed = tmp.path().join("mine.tar.xz");
    std::fs::rename(&copy, &renamed).unwrap();
    let err = prepare(
        DatasetName::Wikitext2,
        &renamed,
        &tmp.path().join("d"),
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, combiner_data::DataError::Archive { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mine.tar.xz"), "{err}");
    assert!(!tmp.path().join("d/wikitext-2").exists());
}
