//! `prepare`, `verify` and `show_stats`: unpack a shipped archive (or a
//! user's real-format files) into a validated cache under the data dir.
//!
//! Cache layout, one folder per [`DatasetName`] under the data dir:
//!
//! | folder | files |
//! | --- | --- |
//! | `cifar10/` | `data_batch_1..5.bin`, `test_batch.bin` (official binary format) |
//! | `tiny-imagenet-train/` | `train_data_batch_1.npz` (ImageNet-64 npz format), `wnids.txt` |
//! | `tiny-imagenet-val/` | `val_data.npz`, `wnids.txt` |
//! | `wikipedia/` | `wiki_00` .. `wiki_99` (WikiExtractor `<doc>` records) |
//! | `imdb/` | `train.jsonl`, `test.jsonl` (`{"text": .., "label": 0/1}`) |
//! | `wikitext-2/`, `wikitext-103/` | `wiki.valid.tokens`, `wiki.test.tokens` |
//!
//! Every folder also holds `manifest.json` (source, its SHA-256, counts and the
//! SHA-256 of every file), which [`verify`] checks. A folder appears only
//! complete: it is built in a temporary sibling and renamed into place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// `cache_dir` lives in `cache`; re-exported so `prepare::cache_dir` keeps working.
pub use crate::cache::cache_dir;
pub use crate::picture::write_image_grid;

use crate::archive::{for_each_member, sha256_bytes, sha256_file, Checksums, Flow};
use crate::cifar::{self, CifarImage};
use crate::error::{utf8, DataError, Result};
use crate::imagenet::{self, ImageNet64};
use crate::names::{DatasetName, Split};
use crate::text::readers::{self, parse_wiki_docs, Imdb, Wikipedia, Wikitext};

/// File written last into every prepared folder.
pub const MANIFEST: &str = "manifest.json";

/// What `prepare` recorded about a cache folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name.
    pub name: String,
    /// File name of the source (archive or folder).
    pub source: String,
    /// SHA-256 of the source archive (absent for a folder).
    pub source_sha256: Option<String>,
    /// Record counts (per split, per class, ...).
    pub counts: BTreeMap<String, u64>,
    /// Every file of the folder except the manifest.
    pub files: Vec<FileEntry>,
}

/// One file listed in a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Builds the cache folder in a temporary directory, recording what it writes.
struct Builder {
    dir: PathBuf,
    files: Vec<FileEntry>,
    counts: BTreeMap<String, u64>,
}

impl Builder {
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| DataError::io("write", &path, e))?;
        self.files.push(FileEntry {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            sha256: sha256_bytes(bytes),
        });
        Ok(())
    }

    /// Records a file that a format writer put into the folder itself.
    fn record(&mut self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| DataError::io("stat", &path, e))?
            .len();
        self.files.push(FileEntry {
            name: name.to_string(),
            bytes,
            sha256: sha256_file(&path)?,
        });
        Ok(())
    }

    fn count(&mut self, key: impl Into<String>, n: usize) {
        *self.counts.entry(key.into()).or_default() += n as u64;
    }
}

/// The expected SHA-256 of `from`, if any is known: the line for its file
/// name in a `SHA256SUMS` beside it, else the built-in hash when the file
/// carries the shipped archive's name.
fn expected_sha256(name: DatasetName, from: &Path) -> Result<Option<String>> {
    let file_name = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sums = from.with_file_name("SHA256SUMS");
    if sums.is_file() {
        if let Some(h) = Checksums::read(&sums)?.entries.get(&file_name) {
            return Ok(Some(h.clone()));
        }
    }
    Ok((file_name == name.shipped_archive()).then(|| name.shipped_sha256().to_string()))
}

/// Unpacks `from` into `<data_dir>/<name>/`, checking and validating on the way,
/// and returns that folder.
///
/// `from` is a shipped archive (its checksum is verified before anything is
/// decoded) or a real-format source: for CIFAR-10 also a folder of official
/// binary batches or the official `cifar-10-binary.tar.gz`. A folder that is
/// already prepared from the same source is kept as it is. `progress(done,
/// total)` reports compressed bytes read.
pub fn prepare(
    name: DatasetName,
    from: &Path,
    data_dir: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<PathBuf> {
    if !from.exists() {
        return Err(DataError::Missing {
            path: from.to_path_buf(),
            hint: format!(
                "pass the {} archive (`{}`) with --from",
                name,
                name.shipped_archive()
            ),
        });
    }
    let source_sha256 = if from.is_file() {
        let actual = sha256_file(from)?;
        if let Some(expected) = expected_sha256(name, from)? {
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(DataError::Checksum {
                    file: from.to_path_buf(),
                    expected,
                    actual,
                });
            }
        }
        Some(actual)
    } else {
        None
    };
    let target = cache_dir(data_dir, name);
    if let Ok(m) = read_manifest(&target) {
        if m.source_sha256.is_some()
            && m.source_sha256 == source_sha256
            && check_files(&target, &m).is_ok()
        {
            return Ok(target);
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|e| DataError::io("create", data_dir, e))?;
    let tmp = data_dir.join(format!(".{}.tmp-{}", name, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| DataError::io("create", &tmp, e))?;
    let mut b = Builder {
        dir: tmp.clone(),
        files: Vec::new(),
        counts: BTreeMap::new(),
    };
    let built = build(name, from, &mut b, &mut progress).and_then(|()| {
        let manifest = Manifest {
            name: name.to_string(),
            source: from
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source_sha256,
            counts: b.counts.clone(),
            files: b.files.clone(),
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        let path = tmp.join(MANIFEST);
        std::fs::write(&path, json).map_err(|e| DataError::io("write", &path, e))
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Swap in the new folder; the old one (if any) is moved aside first
    // because a non-empty directory cannot be renamed over.
    let old = data_dir.join(format!(".{}.old-{}", name, std::process::id()));
    if target.exists() {
        std::fs::rename(&target, &old).map_err(|e| DataError::io("rename", &target, e))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| DataError::io("rename", &tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io("remove", &old, e))?;
    }
    Ok(target)
}

fn build(
    name: DatasetName,
    from: &Path,
    b: &mut Builder,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    match name {
        DatasetName::Cifar10 => build_cifar(from, b, progress),
        DatasetName::TinyImagenetTrain | DatasetName::TinyImagenetVal => {
            let t = imagenet::read_tiny_imagenet(from, progress)?;
            let file = if name == DatasetName::TinyImagenetTrain {
                "train_data_batch_1.npz"
            } else {
                "val_data.npz"
            };
            imagenet::write_npz(&b.dir.join(file), &t.images)?;
            b.record(file)?;
            b.write("wnids.txt", (t.wnids.join("\n") + "\n").as_bytes())?;
            b.count("images", t.images.len());
            b.count("classes", t.wnids.len());
            Ok(())
        }
        DatasetName::Wikipedia => {
            let mut files = Vec::new();
            for_each_member(from, progress, |member, bytes| {
                let file = member.rsplit('/').next().unwrap_or_default();
                if file.starts_with("wiki_") {
                    let text = utf8(bytes, from, member)?;
                    let docs = parse_wiki_docs(&from.join(member), &text)?;
                    files.push((file.to_string(), text, docs.len()));
                }
                Ok(Flow::Continue)
            })?;
            if files.is_empty() {
                return Err(DataError::Empty {
                    what: from.display().to_string(),
                    hint: "expected members text/AA/wiki_00 .. wiki_99".into(),
                });
            }
            for (file, text, docs) in files {
                b.write(&file, text.as_bytes())?;
                b.count(format!("docs_{}", readers::wikipedia_split(&file)), docs);
                b.count("bytes", text.len());
            }
            Ok(())
        }
        DatasetName::Imdb => {
            let (train, test) = readers::read_imdb_archive(from, progress)?;
            for (split, reviews) in [("train", &train), ("test", &test)] {
                let file = format!("{split}.jsonl");
                readers::write_jsonl(&b.dir.join(&file), reviews)?;
                b.record(&file)?;
                let pos = reviews.iter().filter(|r| r.label == 1).count();
                b.count(format!("{split}_pos"), pos);
                b.count(format!("{split}_neg"), reviews.len() - pos);
            }
            Ok(())
        }
        DatasetName::Wikitext2 | DatasetName::Wikitext103 => {
            let mut seen = Vec::new();
            for_each_member(from, progress, |member, bytes| {
                let file = member.rsplit('/').next().unwrap_or_default().to_string();
                if file == "wiki.valid.tokens" || file == "wiki.test.tokens" {
                    let text = utf8(bytes, from, member)?;
                    let lines = text.lines().count();
                    let tokens: usize =
                        text.lines().map(|l| l.split_whitespace().count() + 1).sum();
                    seen.push((file, text, lines, tokens));
                }
                Ok(Flow::Continue)
            })?;
            for want in ["wiki.valid.tokens", "wiki.test.tokens"] {
                if !seen.iter().any(|(f, ..)| f == want) {
                    return Err(DataError::format(
                        from,
                        format!("member <dir>/{want}"),
                        "present in the archive",
                    ));
                }
            }
            for (file, text, lines, tokens) in seen {
                let split = file.split('.').nth(1).unwrap_or_default().to_string();
                b.write(&file, text.as_bytes())?;
                b.count(format!("{split}_lines"), lines);
                b.count(format!("{split}_tokens"), tokens);
            }
            Ok(())
        }
    }
}

fn build_cifar(from: &Path, b: &mut Builder, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let official: Vec<&str> = cifar::TRAIN_FILES
        .iter()
        .copied()
        .chain([cifar::TEST_FILE])
        .collect();
    let store = |b: &mut Builder, file: &str, bytes: &[u8], src: &Path| -> Result<()> {
        let images = cifar::parse_batch(src, bytes)?;
        let split = if file == cifar::TEST_FILE {
            "test"
        } else {
            "train"
        };
        b.count(split, images.len());
        b.write(file, bytes)
    };
    let name = from
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if from.is_dir() {
        for file in &official {
            let path = from.join(file);
            let bytes = std::fs::read(&path).map_err(|e| DataError::io("read", &path, e))?;
            store(b, file, &bytes, &path)?;
        }
        return Ok(());
    }
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let mut found = Vec::new();
        for_each_member(from, progress, |member, bytes| {
            let file = member.rsplit('/').next().unwrap_or_default();
            if official.contains(&file) {
                found.push(file.to_string());
                store(b, file, &bytes, &from.join(member))?;
            }
            Ok(Flow::Continue)
        })?;
        if let Some(missing) = official.iter().find(|f| !found.iter().any(|g| g == *f)) {
            return Err(DataError::format(
                from,
                format!("member cifar-10-batches-bin/{missing}"),
                "present in the archive",
            ));
        }
        return Ok(());
    }
    let (train, test) = cifar::read_jpeg_archive_splits(from, progress)?;
    if train.len() < cifar::TRAIN_FILES.len() {
        return Err(DataError::Empty {
            what: format!("{} split train", from.display()),
            hint: format!(
                "need at least {} images, found {}",
                cifar::TRAIN_FILES.len(),
                train.len()
            ),
        });
    }
    // Balanced order in, balanced files out: each batch gets an equal share of every class.
    let per_file = train.len().div_ceil(cifar::TRAIN_FILES.len());
    for (file, chunk) in cifar::TRAIN_FILES.iter().zip(train.chunks(per_file)) {
        b.write(file, &cifar::encode_batch(chunk))?;
    }
    b.write(cifar::TEST_FILE, &cifar::encode_batch(&test))?;
    b.count("train", train.len());
    b.count("test", test.len());
    for (label, class) in cifar::CLASSES.iter().enumerate() {
        b.count(
            format!("train_{class}"),
            train.iter().filter(|i| i.label as usize == label).count(),
        );
        b.count(
            format!("test_{class}"),
            test.iter().filter(|i| i.label as usize == label).count(),
        );
    }
    Ok(())
}

/// Reads `<dir>/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| DataError::io("read", &path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| DataError::format(&path, "whole file", format!("a prepare manifest ({e})")))
}

fn check_files(dir: &Path, m: &Manifest) -> Result<()> {
    for f in &m.files {
        let path = dir.join(&f.name);
        let bytes = std::fs::metadata(&path)
            .map_err(|e| DataError::io("stat", &path, e))?
            .len();
        if bytes != f.bytes {
            return Err(DataError::format(
                &path,
                "whole file",
                format!("{} bytes as recorded, found {bytes}", f.bytes),
            ));
        }
        crate::archive::verify_sha256(&path, &f.sha256)?;
    }
    Ok(())
}

/// The state of one prepared folder.
#[derive(Debug)]
pub struct ReportEntry {
    /// Which dataset.
    pub name: DatasetName,
    /// Its folder.
    pub dir: PathBuf,
    /// `Ok(files checked)` or what is wrong.
    pub status: std::result::Result<usize, DataError>,
}

/// What [`verify`] found in a data dir.
#[derive(Debug, Default)]
pub struct Report {
    /// One entry per prepared folder present.
    pub entries: Vec<ReportEntry>,
}

impl Report {
    /// True when every present folder checked out.
    pub fn is_ok(&self) -> bool {
        self.entries.iter().all(|e| e.status.is_ok())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return writeln!(f, "no prepared datasets");
        }
        for e in &self.entries {
            match &e.status {
                Ok(n) => writeln!(f, "ok      {:<20} {} files", e.name.as_str(), n)?,
                Err(err) => writeln!(f, "FAILED  {:<20} {err}", e.name.as_str())?,
            }
        }
        Ok(())
    }
}

/// Re-hashes every prepared folder under `data_dir` against its manifest.
/// Folders that are absent are not listed; a damaged one is listed with its error.
pub fn verify(data_dir: &Path) -> Result<Report> {
    if !data_dir.is_dir() {
        return Err(DataError::Missing {
            path: data_dir.to_path_buf(),
            hint: "run `combiner data prepare <name> --from <archive>` first".into(),
        });
    }
    let mut report = Report::default();
    for name in DatasetName::ALL {
        let dir = cache_dir(data_dir, name);
        if !dir.exists() {
            continue;
        }
        let status =
            read_manifest(&dir).and_then(|m| check_files(&dir, &m).map(|()| m.files.len()));
        report.entries.push(ReportEntry { name, dir, status });
    }
    Ok(report)
}

/// Statistics of a prepared dataset, as (key, value) lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Dataset name.
    pub name: String,
    /// Ordered key/value lines.
    pub lines: Vec<(String, String)>,
}

impl Stats {
    fn push(&mut self, key: impl Into<String>, value: impl ToString) {
        self.lines.push((key.into(), value.to_string()));
    }

    /// Value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.name)?;
        for (k, v) in &self.lines {
            writeln!(f, "  {k:<24} {v}")?;
        }
        Ok(())
    }
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Loads a prepared dataset and computes its statistics. With `grid`, image
/// datasets also write a PNG grid of their first 64 training images there.
pub fn show_stats(name: DatasetName, data_dir: &Path, grid: Option<&Path>) -> Result<Stats> {
    let mut s = Stats {
        name: name.to_string(),
        ..Stats::default()
    };
    match name {
        DatasetName::Cifar10 => {
            for split in [Split::Train, Split::Test] {
                let d = cifar::Cifar10::load(data_dir, split)?;
                s.push(format!("{split}_images"), d.images.len());
                s.push(
                    format!("{split}_per_class"),
                    format!("{:?}", d.class_counts()),
                );
                let sum: u64 = d
                    .images
                    .iter()
                    .flat_map(|i| &i.pixels)
                    .map(|&p| p as u64)
                    .sum();
                s.push(
                    format!("{split}_mean_subpixel"),
                    format!(
                        "{:.2}",
                        sum as f64 / (d.images.len() * cifar::TOKENS) as f64
                    ),
                );
                if split == Split::Train {
                    if let Some(path) = grid {
                        let imgs: Vec<&[u8]> = d
                            .images
                            .iter()
                            .take(64)
                            .map(|i: &CifarImage| i.pixels.as_slice())
                            .collect();
                        write_image_grid(path, &imgs, cifar::SIDE, 8)?;
                    }
                }
            }
        }
        DatasetName::TinyImagenetTrain | DatasetName::TinyImagenetVal => {
            let split = if name == DatasetName::TinyImagenetTrain {
                Split::Train
            } else {
                Split::Valid
            };
            let d = ImageNet64::load(data_dir, split)?;
            s.push("images", d.images.len());
            s.push("classes", d.distinct_labels());
            if let Some(path) = grid {
                let imgs: Vec<&[u8]> = d
                    .images
                    .iter()
                    .take(64)
                    .map(|i| i.pixels.as_slice())
                    .collect();
                write_image_grid(path, &imgs, imagenet::SIDE, 8)?;
            }
        }
        DatasetName::Wikipedia => {
            for split in [Split::Train, Split::Valid, Split::Test] {
                let w = Wikipedia::load(data_dir, split)?;
                s.push(format!("{split}_docs"), w.docs.len());
                s.push(
                    format!("{split}_bytes"),
                    w.docs.iter().map(|d| d.text.len()).sum::<usize>(),
                );
            }
        }
        DatasetName::Imdb => {
            for split in [Split::Train, Split::Test] {
                let d = Imdb::load(data_dir, split)?;
                let pos = d.reviews.iter().filter(|r| r.label == 1).count();
                s.push(format!("{split}_pos"), pos);
                s.push(format!("{split}_neg"), d.reviews.len() - pos);
                s.push(
                    format!("{split}_median_bytes"),
                    median(d.reviews.iter().map(|r| r.text.len()).collect()),
                );
            }
        }
        DatasetName::Wikitext2 | DatasetName::Wikitext103 => {
            for split in [Split::Valid, Split::Test] {
                let w = Wikitext::load(data_dir, name, split)?;
                s.push(format!("{split}_lines"), w.lines.len());
                s.push(format!("{split}_tokens"), w.token_count());
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn cifar_archive(dir: &Path, per_class: usize) -> PathBuf {
        let path = dir.join("mini-cifar.tar.xz");
        let mut members = Vec::new();
        for split in ["test", "train"] {
            for class in cifar::CLASSES {
                for i in 0..per_class {
                    members.push((
                        format!("{split}/{class}/{i:04}.jpg"),
                        testutil::jpeg(32, 32, 3, i as u8 + 1),
                    ));
                }
            }
        }
        testutil::write_tar_xz(&path, &members);
        path
    }

    #[test]
    fn prepare_cifar_writes_balanced_batches_and_verify_detects_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let src = cifar_archive(tmp.path(), 5);
        let data = tmp.path().join("data");
        let mut calls = 0;
        let dir = prepare(DatasetName::Cifar10, &src, &data, |done, total| {
            assert!(done <= total);
            calls += 1;
        })
        .unwrap();
        assert!(calls > 0);
        let train = cifar::Cifar10::load(&data, Split::Train).unwrap();
        assert_eq!(train.class_counts(), [5; 10]);
        // 50 images in 5 files: 10 per file, one of each class.
        let first = cifar::read_batch(&dir.join("data_batch_1.bin")).unwrap();
        let mut labels: Vec<u8> = first.iter().map(|i| i.label).collect();
        labels.sort();
        assert_eq!(labels, (0..10).collect::<Vec<u8>>());
        assert_eq!(
            cifar::Cifar10::load(&data, Split::Test)
                .unwrap()
                .images
                .len(),
            50
        );
        let stats = show_stats(
            DatasetName::Cifar10,
            &data,
            Some(&tmp.path().join("grid.png")),
        )
        .unwrap();
        assert_eq!(stats.get("test_images"), Some("50"));
        assert!(tmp.path().join("grid.png").exists());

        let report = verify(&data).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.entries.len(), 1);
        // No temporary folders left behind.
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);

        let mut bytes = std::fs::read(dir.join("test_batch.bin")).unwrap();
        bytes[100] ^= 1;
        std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
        let report = verify(&data).unwrap();
        assert!(!report.is_ok());
        assert!(report.to_string().contains("test_batch.bin"), "{report}");

        // Preparing again repairs the damaged cache.
        prepare(DatasetName::Cifar10, &src, &data, |_, _| {}).unwrap();
        assert!(verify(&data).unwrap().is_ok());
    }

    #[test]
    fn wrong_checksum_stops_prepare_before_decoding() {
        let tmp = tempfile::tempdir().unwrap();
        let src = cifar_archive(tmp.path(), 1);
        let shipped = tmp.path().join(DatasetName::Cifar10.shipped_archive());
        std::fs::rename(&src, &shipped).unwrap();
        let data = tmp.path().join("data");
        // The built-in hash of the real archive cannot match this small one.
        let err = prepare(DatasetName::Cifar10, &shipped, &data, |_, _| {}).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("cifar10-jpeg.tar.xz")
                && msg.contains(DatasetName::Cifar10.shipped_sha256()),
            "{msg}"
        );
        assert!(!cache_dir(&data, DatasetName::Cifar10).exists());

        // A SHA256SUMS beside the archive takes precedence over the built-in list.
        let actual = sha256_file(&shipped).unwrap();
        std::fs::write(
            tmp.path().join("SHA256SUMS"),
            format!("{actual}  cifar10-jpeg.tar.xz\n"),
        )
        .unwrap();
        prepare(DatasetName::Cifar10, &shipped, &data, |_, _| {}).unwrap();
    }

    #[test]
    fn prepare_cifar_from_official_binary_folder_and_reject_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&src).unwrap();
        let img = |l: u8| CifarImage {
            pixels: vec![l; cifar::TOKENS],
            label: l,
        };
        for file in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
            cifar::write_batch(&src.join(file), &[img(1), img(2)]).unwrap();
        }
        let data = tmp.path().join("data");
        prepare(DatasetName::Cifar10, &src, &data, |_, _| {}).unwrap();
        assert_eq!(
            cifar::Cifar10::load(&data, Split::Train)
                .unwrap()
                .images
                .len(),
            10
        );

        let bytes = std::fs::read(src.join("data_batch_3.bin")).unwrap();
        std::fs::write(src.join("data_batch_3.bin"), &bytes[..cifar::RECORD + 5]).unwrap();
        let err = prepare(
            DatasetName::Cifar10,
            &src,
            &tmp.path().join("d2"),
            |_, _| {},
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("data_batch_3.bin") && msg.contains("record 1"),
            "{msg}"
        );
    }

    #[test]
    fn prepare_text_archives_and_load_splits() {
        let tmp = tempfile::tempdir().unwrap();
        let wiki = tmp.path().join("wiki.tar.xz");
        let doc = |id: u32| {
            format!("<doc id=\"{id}\" url=\"u\" title=\"T{id}\">\nT{id}\n\nBody {id}.\n</doc>\n")
        };
        testutil::write_tar_xz(
            &wiki,
            &[
                ("text/AA/wiki_00".into(), (doc(1) + &doc(2)).into_bytes()),
                ("text/AA/wiki_98".into(), doc(3).into_bytes()),
                ("text/AA/wiki_99".into(), doc(4).into_bytes()),
            ],
        );
        let data = tmp.path().join("data");
        prepare(DatasetName::Wikipedia, &wiki, &data, |_, _| {}).unwrap();
        let train = Wikipedia::load(&data, Split::Train).unwrap();
        assert_eq!(
            train.docs.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            Wikipedia::load(&data, Split::Test).unwrap().docs[0].text,
            "Body 4."
        );

        let wt = tmp.path().join("wt.tar.xz");
        testutil::write_tar_xz(
            &wt,
            &[(
                "wikitext-2/wiki.valid.tokens".into(),
                b" = A = \n the cat <unk> \n".to_vec(),
            )],
        );
        let err = prepare(DatasetName::Wikitext2, &wt, &data, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("wiki.test.tokens"), "{err}");
    }
}
