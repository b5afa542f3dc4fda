//! End-to-end tests of `combiner data ...`.
//!
//! Tests that read the shipped archives look for them in
//! `$COMBINER_SHARED_DATA`, else `<repo>/../shared/data`. When they are
//! missing these tests print a skip notice, except under `CI=true`, where
//! they fail.

use super::common::{fails_with as fails, ok_with as ok, shared_archive};

const WIKITEXT2: &str = "wikitext-2-eval.tar.xz";

#[test]
fn data_help_texts_name_commands_datasets_and_examples() {
    let top = ok(&["--help"], &[]);
    assert!(top.contains("data"), "{top}");

    let data = ok(&["data", "--help"], &[]);
    for want in [
        "prepare",
        "verify",
        "show",
        "generate",
        "--data-dir",
        "Example",
    ] {
        assert!(data.contains(want), "data --help lacks {want:?}:\n{data}");
    }

    let prepare = ok(&["data", "prepare", "--help"], &[]);
    for want in [
        "cifar10",
        "tiny-imagenet-train",
        "tiny-imagenet-val",
        "wikipedia",
        "imdb",
        "wikitext-2",
        "wikitext-103",
        "--from",
        "--data-dir",
        "COMBINER_DATA",
        "COMBINER_SHARED_DATA",
        "SHA256SUMS",
        "Example",
    ] {
        assert!(
            prepare.contains(want),
            "data prepare --help lacks {want:?}:\n{prepare}"
        );
    }

    let cases: [(&str, &[&str]); 3] = [
        ("verify", &["manifest", "non-zero", "Example"]),
        ("show", &["--png", "class balance", "Example"]),
        (
            "generate",
            &["listops", "pathfinder", "--seed", "--count", "Example"],
        ),
    ];
    for (cmd, wants) in cases {
        let help = ok(&["data", cmd, "--help"], &[]);
        for want in wants {
            assert!(
                help.contains(want),
                "data {cmd} --help lacks {want:?}:\n{help}"
            );
        }
    }
}

#[test]
fn unknown_dataset_is_refused_with_the_known_names() {
    let err = fails(&["data", "prepare", "cifar100"], &[]);
    assert!(
        err.contains("cifar100") && err.contains("wikitext-103"),
        "{err}"
    );
}

#[test]
fn prepare_from_a_missing_path_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere.tar.xz");
    let data = tmp.path().join("data");
    let err = fails(
        &[
            "data",
            "--data-dir",
            data.to_str().unwrap(),
            "prepare",
            "imdb",
            "--from",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("nowhere.tar.xz"), "{err}");
    assert!(!data.join("imdb").exists());
}

#[test]
fn verify_of_a_missing_data_dir_fails_and_of_an_empty_one_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let err = fails(
        &["data", "verify", "--data-dir", missing.to_str().unwrap()],
        &[],
    );
    assert!(err.contains("no-such-dir"), "{err}");

    // The data dir also comes from $COMBINER_DATA.
    let out = ok(&["data", "verify"], &[("COMBINER_DATA", tmp.path())]);
    assert!(out.contains("no prepared datasets"), "{out}");
}

#[test]
fn prepare_wikitext2_then_verify_show_and_detect_damage() {
    let test = "prepare_wikitext2_then_verify_show_and_detect_damage";
    let Some(archive) = shared_archive(test, WIKITEXT2) else {
        return;
    };
    let shared = archive.parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // Default --from: the shipped archive in the shared data folder; the
    // spelling without a dash is accepted too.
    let out = ok(
        &["data", "--data-dir", d, "prepare", "wikitext2"],
        &[("COMBINER_SHARED_DATA", shared)],
    );
    for want in [
        "wiki.valid.tokens",
        "wiki.test.tokens",
        WIKITEXT2,
        "manifest.json",
    ] {
        assert!(out.contains(want), "prepare output lacks {want:?}:\n{out}");
    }
    let cache = data.join("wikitext-2");
    assert!(cache.join("manifest.json").is_file());
    // Only the finished folder is left: no temporary siblings.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);

    let out = ok(&["data", "verify", "--data-dir", d], &[]);
    assert!(
        out.contains("wikitext-2") && out.contains("verified"),
        "{out}"
    );

    let out = ok(&["data", "show", "wikitext-2", "--data-dir", d], &[]);
    for want in ["valid_tokens", "217646", "test_tokens", "245569"] {
        assert!(out.contains(want), "show output lacks {want:?}:\n{out}");
    }
    let err = fails(
        &[
            "data",
            "show",
            "wikitext-2",
            "--data-dir",
            d,
            "--png",
            "x.png",
        ],
        &[],
    );
    assert!(err.contains("--png"), "{err}");

    // Damage one cached file: verify fails and names it.
    let victim = cache.join("wiki.test.tokens");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();
    let err = fails(&["data", "verify", "--data-dir", d], &[]);
    assert!(
        err.contains("wiki.test.tokens") && err.contains("FAILED") && err.contains("wikitext-2"),
        "{err}"
    );

    // Preparing again repairs it.
    let from = archive.to_str().unwrap();
    ok(
        &[
            "data",
            "--data-dir",
            d,
            "prepare",
            "wikitext-2",
            "--from",
            from,
        ],
        &[],
    );
    ok(&["data", "verify", "--data-dir", d], &[]);
}

#[test]
fn prepare_from_a_corrupted_archive_fails_with_a_checksum_error() {
    let test = "prepare_from_a_corrupted_archive_fails_with_a_checksum_error";
    let Some(archive) = shared_archive(test, WIKITEXT2) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Same file name as the shipped archive, so its built-in hash applies.
    let copy = tmp.path().join(WIKITEXT2);
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let data = tmp.path().join("data");
    let err = fails(
        &[
            "data",
            "--data-dir",
            data.to_str().unwrap(),
            "prepare",
            "wikitext-2",
            "--from",
            copy.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(copy.to_str().unwrap()),
        "{err}"
    );
    assert!(!data.join("wikitext-2").exists(), "nothing is cached");

    // With the shared SHA256SUMS beside it, the listed hash is the one checked.
    std::fs::copy(
        archive.with_file_name("SHA256SUMS"),
        tmp.path().join("SHA256SUMS"),
    )
    .unwrap();
    let err = fails(
        &[
            "data",
            "--data-dir",
            data.to_str().unwrap(),
            "prepare",
            "wikitext-2",
            "--from",
            copy.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(WIKITEXT2),
        "{err}"
    );
}

#[test]
fn generate_listops_and_pathfinder_are_deterministic() {
    let a = ok(
        &[
            "data", "generate", "listops", "--count", "20", "--seed", "3",
        ],
        &[],
    );
    assert!(a.contains("examples") && a.contains("20"), "{a}");
    assert!(a.contains("per_label_0..9"), "{a}");
    let strip = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    let b = ok(
        &[
            "data", "generate", "listops", "--count", "20", "--seed", "3",
        ],
        &[],
    );
    assert_eq!(strip(&a), strip(&b), "same seed, same set");

    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("pf.png");
    let out = ok(
        &[
            "data",
            "generate",
            "pathfinder",
            "--count",
            "16",
            "--seed",
            "1",
            "--png",
            png.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.contains("flood_fill_agrees") && out.contains("16 of 16"),
        "{out}"
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap().info().clone();
    // 8 columns x 2 rows of 32x32 with one-pixel borders.
    assert_eq!((info.width, info.height), (8 * 33 + 1, 2 * 33 + 1));

    let err = fails(
        &[
            "data", "generate", "listops", "--count", "2", "--png", "x.png",
        ],
        &[],
    );
    assert!(err.contains("--png"), "{err}");
}
