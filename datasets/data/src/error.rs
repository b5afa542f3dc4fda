//! Typed errors. Every variant that concerns an input names the file, the
//! record inside it (record index, archive member or line) and what was
//! expected, so a user can find the bad byte without a debugger.

use std::path::{Path, PathBuf};

/// Any failure while reading, writing, generating or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused an operation on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted ("open", "read", "write", "rename", ...).
        op: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends inside a record.
    #[error("{file}: record {record} is truncated: expected {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        file: PathBuf,
        /// 0-based record index.
        record: usize,
        /// Bytes a whole record needs.
        expected: usize,
        /// Bytes that were left.
        found: usize,
    },
    /// A record does not have the expected form.
    #[error("{file}: {record}: expected {expected}")]
    Format {
        /// The file.
        file: PathBuf,
        /// Which record: "record 17", "member train/cat/0001.jpg", "line 5", ...
        record: String,
        /// What the reader expected to find there (and what it found).
        expected: String,
    },
    /// An image has the wrong size or number of channels.
    #[error("{file}: member {member}: expected a {expected} image, found {found}")]
    ImageSize {
        /// The archive or folder.
        file: PathBuf,
        /// The image inside it.
        member: String,
        /// For example "32x32 RGB".
        expected: String,
        /// What the image is.
        found: String,
    },
    /// A label outside `0..classes`.
    #[error("{file}: record {record}: label {label} is out of range, expected 0..{classes}")]
    BadLabel {
        /// The file.
        file: PathBuf,
        /// 0-based record index.
        record: usize,
        /// The label found.
        label: i64,
        /// Number of classes.
        classes: usize,
    },
    /// A text member that is not UTF-8.
    #[error("{file}: member {member} is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 {
        /// The archive or file.
        file: PathBuf,
        /// The member or line.
        member: String,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The archive (tar, xz, gzip or zip) is corrupt or truncated.
    #[error("{file}: corrupt or truncated archive (after {after}): {message}")]
    Archive {
        /// The archive.
        file: PathBuf,
        /// The last member read successfully, or "start".
        after: String,
        /// What the decoder said.
        message: String,
    },
    /// A file's SHA-256 differs from the listed one.
    #[error("{file}: SHA-256 mismatch: expected {expected}, actual {actual}")]
    Checksum {
        /// The file.
        file: PathBuf,
        /// The listed hash.
        expected: String,
        /// The hash of the bytes on disk.
        actual: String,
    },
    /// The checksum list has no line for the file.
    #[error("{sums}: no checksum listed for {name}")]
    NotListed {
        /// The SHA256SUMS file.
        sums: PathBuf,
        /// The archive's file name.
        name: String,
    },
    /// A split or dataset has no records.
    #[error("{what} is empty: {hint}")]
    Empty {
        /// Which split or file.
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// The data has not been prepared or the shipped data is missing.
    #[error("{path} not found: {hint}")]
    Missing {
        /// Where the data was looked for.
        path: PathBuf,
        /// How to get it there.
        hint: String,
    },
    /// An invalid setting in a generator or batcher config.
    #[error("invalid config: {0}")]
    Config(String),
    /// A dataset name that this crate does not know.
    #[error("unknown dataset {name:?}; known: {known}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
    /// The subword tokenizer library failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or "<memory>").
        path: PathBuf,
        /// The library's message.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Shorthand for [`DataError::Io`].
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Shorthand for [`DataError::Format`].
    pub fn format(
        file: impl AsRef<Path>,
        record: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        DataError::Format {
            file: file.as_ref().to_path_buf(),
            record: record.into(),
            expected: expected.into(),
        }
    }

    /// Shorthand for [`DataError::Archive`].
    pub fn archive(file: impl AsRef<Path>, after: impl Into<String>, err: impl ToString) -> Self {
        DataError::Archive {
            file: file.as_ref().to_path_buf(),
            after: after.into(),
            message: err.to_string(),
        }
    }
}

/// Checks `bytes` for UTF-8 and names `member` of `file` if they are not.
pub(crate) fn utf8(bytes: Vec<u8>, file: &Path, member: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
        file: file.to_path_buf(),
        member: member.to_string(),
        offset: e.utf8_error().valid_up_to(),
    })
}
