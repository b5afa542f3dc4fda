//! Where data lives: the data dir, the shipped archives and the cache folder
//! of each dataset under the data dir (its layout is in [`crate::prepare`]).

use std::path::{Path, PathBuf};

use crate::names::DatasetName;

/// Environment variable that overrides the default data directory.
pub const DATA_DIR_ENV: &str = "COMBINER_DATA";
/// Environment variable that points at the shipped archives (`shared/data`).
pub const SHARED_DATA_ENV: &str = "COMBINER_SHARED_DATA";

/// The data directory: `cli` if given, else `$COMBINER_DATA`, else `./data`.
pub fn data_dir(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Where the shipped archives are: `$COMBINER_SHARED_DATA` if set, else
/// `<repo>/../shared/data` (resolved from this crate's source location, so it
/// does not depend on the working directory).
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os(SHARED_DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// The cache folder of `name` under `data_dir`.
pub fn cache_dir(data_dir: &Path, name: DatasetName) -> PathBuf {
    data_dir.join(name.as_str())
}
