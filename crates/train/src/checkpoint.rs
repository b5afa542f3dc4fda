//! Checkpoints written atomically, one step at a time.
//!
//! Every file is recorded into `checkpoints/.partial/` and renamed into
//! `checkpoints/` (a rename within one directory is atomic), and a
//! checkpoint counts only when its model, optimizer, scheduler and state
//! files all exist, so a run killed mid-write resumes from the last complete
//! one.

use std::path::{Path, PathBuf};

use burn::record::{FileRecorder, Record};
use burn::tensor::backend::Backend;
use burn::train::checkpoint::{
    Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy,
};
use burn::train::metric::store::EventStoreClient;
use serde::{Deserialize, Serialize};

/// Parts of a checkpoint written by burn's recorder.
pub const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// A [`Checkpointer`] that writes through a temporary file and a rename.
#[derive(Clone, Debug)]
pub struct AtomicCheckpointer<FR> {
    recorder: FR,
    dir: PathBuf,
    name: String,
}

impl<FR> AtomicCheckpointer<FR> {
    /// Files `dir/{name}-{step}.{ext}`.
    pub fn new(recorder: FR, dir: &Path, name: &str) -> Self {
        AtomicCheckpointer {
            recorder,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn stem(&self, step: usize) -> String {
        format!("{}-{step}", self.name)
    }
}

impl<FR, R, B> Checkpointer<R, B> for AtomicCheckpointer<FR>
where
    R: Record<B>,
    B: Backend,
    FR: FileRecorder<B>,
{
    fn save(&self, step: usize, record: R) -> Result<(), CheckpointerError> {
        let partial = self.dir.join(".partial");
        std::fs::create_dir_all(&partial).map_err(CheckpointerError::IOError)?;
        let tmp = partial.join(self.stem(step));
        self.recorder
            .record(record, tmp.clone())
            .map_err(CheckpointerError::RecorderError)?;
        let ext = FR::file_extension();
        let from = tmp.with_extension(ext);
        let to = self.dir.join(self.stem(step)).with_extension(ext);
        std::fs::rename(&from, &to).map_err(CheckpointerError::IOError)
    }

    fn delete(&self, step: usize) -> Result<(), CheckpointerError> {
        let path = self
            .dir
            .join(self.stem(step))
            .with_extension(FR::file_extension());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CheckpointerError::IOError(e))
            }
            _ => Ok(()),
        }
    }

    fn restore(&self, step: usize, device: &B::Device) -> Result<R, CheckpointerError> {
        let path = self.dir.join(self.stem(step));
        let record = self
            .recorder
            .load(path, device)
            .map_err(CheckpointerError::RecorderError)?;
        Ok(record)
    }
}

/// Keeps the last `keep` checkpoints (by step) and saves every time it is asked.
#[derive(Clone, Debug)]
pub struct KeepLast {
    keep: usize,
    saved: Vec<usize>,
}

impl KeepLast {
    /// Keep `keep >= 1` checkpoints; `existing` are those already on disk.
    pub fn new(keep: usize, mut existing: Vec<usize>) -> Self {
        existing.sort_unstable();
        KeepLast {
            keep: keep.max(1),
            saved: existing,
        }
    }
}

impl CheckpointingStrategy for KeepLast {
    fn checkpointing(
        &mut self,
        step: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.push(step);
        while self.saved.len() > self.keep {
            actions.push(CheckpointingAction::Delete(self.saved.remove(0)));
        }
        actions
    }
}

/// What a checkpoint adds to burn's records: where the data stream stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Training items consumed (the data position).
    pub items: usize,
    /// Loss of the last step.
    pub loss: f64,
}

/// Writes `value` as JSON to `path` through a temporary file and a rename.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Steps of the complete checkpoints in `dir` (all parts and the state file
/// present), ascending.
pub fn complete_checkpoints(dir: &Path, ext: &str) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut steps: Vec<usize> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("state-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .filter(|&s| {
            PARTS
                .iter()
                .all(|p| dir.join(format!("{p}-{s}")).with_extension(ext).exists())
        })
        .collect();
    steps.sort_unstable();
    steps
}

/// The state file of checkpoint `step`.
pub fn state_path(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("state-{step}.json"))
}
