//! A process-wide memo of compiled structures (layouts, sparse patterns),
//! shared behind `Arc`s.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

/// How many entries a [`Memo`] holds before it empties itself.
const CAPACITY: usize = 16;

/// Values built once per key and shared afterwards; at most 16 entries (the
/// memo is emptied when full: training uses one or two keys). Usable in a
/// `static`.
pub struct Memo<K, V> {
    map: OnceLock<Mutex<HashMap<K, Arc<V>>>>,
}

impl<K: Eq + Hash, V> Memo<K, V> {
    /// An empty memo.
    pub const fn new() -> Self {
        Memo {
            map: OnceLock::new(),
        }
    }

    /// The value for `key`, built by `build` on first use. A failed build is
    /// returned and not remembered.
    pub fn get_or_try_insert<E>(
        &self,
        key: K,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let lock = || {
            self.map
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        if let Some(hit) = lock().get(&key) {
            return Ok(hit.clone());
        }
        let value = Arc::new(build()?);
        let mut map = lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, value.clone());
        Ok(value)
    }
}

impl<K: Eq + Hash, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self::new()
    }
}
