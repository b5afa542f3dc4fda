//! Streaming access to tar archives (plain, `.xz` or `.gz`) and SHA-256
//! checksums in the `sha256sum` format of `SHA256SUMS`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Whether [`for_each_member`] should go on after a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next member.
    Continue,
    /// Stop reading: the caller has what it needs. Archives are sorted by
    /// name, so a split can end the scan early and skip decompressing the rest.
    Stop,
}

/// Counts the compressed bytes consumed so progress can be reported in terms
/// of the file size, the only total known before decompressing.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Compression of an archive, chosen by its file name.
fn decoder<'a>(path: &Path, file: Counting<BufReader<File>>) -> Box<dyn Read + 'a> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".xz") || name.ends_with(".txz") {
        Box::new(lzma_rust2::XzReader::new(file, true))
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    }
}

/// Calls `visit(member_path, bytes)` for every regular file of the tar archive
/// at `path`, in archive order, and `progress(done, total)` with compressed
/// bytes consumed so far and the archive's size.
///
/// A corrupt or truncated archive gives [`DataError::Archive`] naming the last
/// member read; errors returned by `visit` pass through unchanged.
pub fn for_each_member(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
    mut visit: impl FnMut(&str, Vec<u8>) -> Result<Flow>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| DataError::io("open", path, e))?;
    let total = file
        .metadata()
        .map_err(|e| DataError::io("stat", path, e))?
        .len();
    let count = Rc::new(Cell::new(0));
    let reader = Counting {
        inner: BufReader::with_capacity(1 << 16, file),
        count: count.clone(),
    };
    let mut archive = tar::Archive::new(decoder(path, reader));
    let mut last = String::from("start");
    let entries = archive
        .entries()
        .map_err(|e| DataError::archive(path, &last, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::archive(path, &last, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| DataError::archive(path, &last, e))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::archive(path, &last, format!("reading {name}: {e}")))?;
        progress(count.get(), total);
        let flow = visit(&name, bytes)?;
        last = name;
        if flow == Flow::Stop {
            return Ok(());
        }
    }
    // the tar end marker can come before the end of the compressed stream:
    // read the stream to its end so that a cut or damaged tail (xz index,
    // footer, checksum) is an error too
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| {
        DataError::archive(
            path,
            &last,
            format!("the compressed stream does not end cleanly after the last member: {e}"),
        )
    })?;
    progress(total, total);
    Ok(())
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| DataError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| DataError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of bytes in memory, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed `SHA256SUMS` file: file name -> expected hex digest.
#[derive(Debug, Clone)]
pub struct Checksums {
    /// Where the list was read from (for error messages).
    pub source: PathBuf,
    /// File name (as listed) -> lowercase hex SHA-256.
    pub entries: BTreeMap<String, String>,
}

impl Checksums {
    /// Parses the `sha256sum` output format: `<64 hex>  <name>` per line
    /// (`*<name>` marks binary mode). Blank lines and `#` comments are skipped.
    pub fn parse(source: &Path, text: &str) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                DataError::format(
                    source,
                    format!("line {}", i + 1),
                    format!("`<64 hex digits>  <file name>`, found {line:?}"),
                )
            };
            let (hash, name) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let name = name.trim_start().trim_start_matches('*');
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
                return Err(bad());
            }
            entries.insert(name.to_string(), hash.to_ascii_lowercase());
        }
        Ok(Self {
            source: source.to_path_buf(),
            entries,
        })
    }

    /// Reads and parses a `SHA256SUMS` file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
        let text = crate::error::utf8(text, path, "whole file")?;
        Self::parse(path, &text)
    }

    /// Hashes `file` and compares it with the entry for its file name.
    pub fn verify(&self, file: &Path) -> Result<()> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = self
            .entries
            .get(&name)
            .ok_or_else(|| DataError::NotListed {
                sums: self.source.clone(),
                name: name.clone(),
            })?;
        verify_sha256(file, expected)
    }
}

/// Hashes `file` and compares it with `expected` (hex, any case).
pub fn verify_sha256(file: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(file)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            file: file.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_names_file_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        // Known SHA-256 of "abc".
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let sums = Checksums::parse(Path::new("SUMS"), &format!("{good}  a.bin\n")).unwrap();
        sums.verify(&file).unwrap();

        std::fs::write(&file, b"abd").unwrap();
        let err = sums.verify(&file).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Checksum { .. }), "{msg}");
        assert!(msg.contains("a.bin") && msg.contains(good), "{msg}");
        assert!(msg.contains(&sha256_bytes(b"abd")), "{msg}");
    }

    #[test]
    fn unlisted_file_and_malformed_lines_are_errors() {
        let sums = Checksums::parse(Path::new("SUMS"), "# c\n\n").unwrap();
        let err = sums.verify(Path::new("x.tar.xz")).unwrap_err();
        assert!(err.to_string().contains("x.tar.xz"), "{err}");
        let err = Checksums::parse(Path::new("SUMS"), "deadbeef  x\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn truncated_xz_archive_is_an_archive_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar.xz");
        let members: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| (format!("m/{i:03}.txt"), vec![b'a' + (i % 26) as u8; 5000]))
            .collect();
        crate::testutil::write_tar_xz(&path, &members);
        let mut seen = Vec::new();
        for_each_member(&path, &mut |_, _| {}, |name, bytes| {
            seen.push((name.to_string(), bytes));
            Ok(Flow::Continue)
        })
        .unwrap();
        assert_eq!(seen, members);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = for_each_member(&path, &mut |_, _| {}, |_, _| Ok(Flow::Continue)).unwrap_err();
        assert!(matches!(err, DataError::Archive { .. }), "{err}");
        assert!(err.to_string().contains("t.tar.xz"), "{err}");
    }
}
