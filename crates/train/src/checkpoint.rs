//! Checkpoints written atomically, one step at a time.
//!
//! Every file is recorded into `checkpoints/.partial/` and renamed into
//! `checkpoints/` (a rename within one directory is atomic), and a
//! checkpoint counts only when its model, optimizer, scheduler and state
//! files all exist, so a run killed mid-write resumes from the last complete
//! one. Old checkpoints are removed only once `keep` newer ones are complete
//! ([`prune_checkpoints`]), so a write that fails (a full or read-only disk)
//! never costs the checkpoint before it.

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
        let failed = |path: &Path, e: &dyn std::fmt::Display| {
            CheckpointerError::Unknown(format!("{}: {e}", path.display()))
        };
        let partial = self.dir.join(".partial");
        std::fs::create_dir_all(&partial).map_err(|e| failed(&partial, &e))?;
        let tmp = partial.join(self.stem(step));
        let ext = FR::file_extension();
        let from = tmp.with_extension(ext);
        self.recorder
            .record(record, tmp.clone())
            .map_err(|e| failed(&from, &e))?;
        if let Some(pause) = write_pause() {
            std::thread::sleep(pause);
        }
        let to = self.dir.join(self.stem(step)).with_extension(ext);
        std::fs::rename(&from, &to).map_err(|e| failed(&to, &e))
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

/// Fault injection for the crash tests: `COMBINER_FAULT_CHECKPOINT_PAUSE_MS`
/// holds every checkpoint part in `.partial/` that long before its rename,
/// so a test can kill the process while a checkpoint is being written.
fn write_pause() -> Option<std::time::Duration> {
    let ms = std::env::var("COMBINER_FAULT_CHECKPOINT_PAUSE_MS").ok()?;
    ms.parse().ok().map(std::time::Duration::from_millis)
}

/// Saves every time it is asked and never deletes: old checkpoints go
/// through [`prune_checkpoints`], which sees which ones are complete.
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveAlways;

impl CheckpointingStrategy for SaveAlways {
    fn checkpointing(
        &mut self,
        _step: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        vec![CheckpointingAction::Save]
    }
}

/// Removes the checkpoints of `dir` older than its `keep` newest complete
/// ones, and the leftover parts of incomplete checkpoints older than the
/// newest complete one (a write that failed). A checkpoint still being
/// written is not complete, so it never counts towards `keep`.
pub fn prune_checkpoints(dir: &Path, ext: &str, keep: usize) -> std::io::Result<()> {
    let complete = complete_checkpoints(dir, ext);
    let Some(&newest) = complete.last() else {
        return Ok(());
    };
    let cut = complete.len().saturating_sub(keep.max(1));
    let mut doomed: Vec<usize> = complete[..cut].to_vec();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        let step = name
            .split_once('-')
            .and_then(|(_, rest)| rest.split('.').next())
            .and_then(|s| s.parse::<usize>().ok());
        if let Some(step) = step {
            if step < newest && !complete.contains(&step) {
                doomed.push(step);
            }
        }
    }
    doomed.sort_unstable();
    doomed.dedup();
    for step in doomed {
        // the state file first: without it the parts no longer count
        let files = std::iter::once(state_path(dir, step)).chain(
            PARTS
                .iter()
                .map(|p| dir.join(format!("{p}-{step}")).with_extension(ext)),
        );
        for file in files {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Removes what a killed checkpoint write left in `dir/.partial/`.
pub fn clear_partial(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir.join(".partial")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
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
                .all(|p| dir.join(format!("{p}-{s}")).with_extension(ext).is_file())
        })
        .collect();
    steps.sort_unstable();
    steps
}

/// The state file of checkpoint `step`.
pub fn state_path(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("state-{step}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, step: usize, parts: &[&str], state: bool) {
        for p in parts {
            std::fs::write(dir.join(format!("{p}-{step}.mpk")), b"x").unwrap();
        }
        if state {
            std::fs::write(state_path(dir, step), b"{}").unwrap();
        }
    }

    #[test]
    fn pruning_keeps_the_newest_complete_checkpoints_and_anything_in_flight() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for s in [3, 6, 9] {
            touch(dir, s, &PARTS, true);
        }
        touch(dir, 5, &["model"], true); // a write that failed
        touch(dir, 12, &["model", "optim"], true); // being written
        prune_checkpoints(dir, "mpk", 2).unwrap();
        assert_eq!(complete_checkpoints(dir, "mpk"), vec![6, 9]);
        assert!(!dir.join("model-5.mpk").exists() && !state_path(dir, 5).exists());
        assert!(dir.join("model-12.mpk").exists() && state_path(dir, 12).exists());
        // a checkpoint still being written never costs a complete one
        prune_checkpoints(dir, "mpk", 1).unwrap();
        assert_eq!(complete_checkpoints(dir, "mpk"), vec![9]);
        assert!(dir.join("optim-12.mpk").exists());
    }

    #[test]
    fn a_directory_in_place_of_a_part_is_not_a_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), 4, &["optim", "scheduler"], true);
        std::fs::create_dir(tmp.path().join("model-4.mpk")).unwrap();
        assert!(complete_checkpoints(tmp.path(), "mpk").is_empty());
    }
}
