//! Per-module persistent state behind the `state_*` host imports.
//!
//! Two stores: [`MemoryState`] (tests, `replay` without `--state`) and
//! [`SledState`] (the daemon, `replay --state DIR`), one sled tree per module
//! name so modules cannot see each other's keys. Writes arrive as the
//! committed batch of one successful call and are applied atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The sled database failed (I/O error, corruption).
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    /// A lock was poisoned by a panicking thread.
    #[error("state store: lock poisoned")]
    Poisoned,
}

/// One write of a committed call: `None` deletes the key.
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// Storage for processor state, keyed by module name.
pub trait StateStore: Send + Sync {
    /// The value of `key` for `module`.
    fn get(&self, module: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Apply a call's writes, in order, atomically.
    fn apply(&self, module: &str, writes: &[StateWrite]) -> Result<(), StateError>;
    /// Bytes used by `module` (keys + values).
    fn usage(&self, module: &str) -> Result<u64, StateError>;
}

/// One module's keys and values.
type ModuleState = BTreeMap<Vec<u8>, Vec<u8>>;

/// State kept in memory; lost at exit.
#[derive(Debug, Default)]
pub struct MemoryState {
    modules: Mutex<HashMap<String, ModuleState>>,
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryState {
    fn get(&self, module: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let modules = self.modules.lock().map_err(|_| StateError::Poisoned)?;
        Ok(modules.get(module).and_then(|m| m.get(key).cloned()))
    }

    fn apply(&self, module: &str, writes: &[StateWrite]) -> Result<(), StateError> {
        let mut modules = self.modules.lock().map_err(|_| StateError::Poisoned)?;
        let m = modules.entry(module.to_string()).or_default();
        for (k, v) in writes {
            match v {
                Some(v) => {
                    m.insert(k.clone(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        Ok(())
    }

    fn usage(&self, module: &str) -> Result<u64, StateError> {
        let modules = self.modules.lock().map_err(|_| StateError::Poisoned)?;
        Ok(modules
            .get(module)
            .map(|m| m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
            .unwrap_or(0))
    }
}

/// Open the sled database in `dir`: an explicit page cache (sled's default
/// is 1 GiB) and a 500 ms flush interval.
///
/// A handle dropped a moment ago may still hold the directory lock while
/// sled's flusher thread winds down; opening retries for up to two seconds
/// before reporting the lock as held (by another wasmgate, usually).
pub fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    open_db_with(dir, cache_bytes, 500)
}

/// [`open_db`] with sled's background flush interval, ms.
pub fn open_db_with(
    dir: &Path,
    cache_bytes: u64,
    flush_every_ms: u64,
) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let result = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(flush_every_ms))
            .open();
        match result {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether opening failed because another handle holds the directory lock.
/// sled 0.34 reports it as an `Other` I/O error ("could not acquire lock …
/// WouldBlock"), not as `WouldBlock`.
pub fn is_locked(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

/// State in a sled database: one tree per module (`state/<module>`).
///
/// Writes are applied with a sled batch (atomic) and become durable at sled's
/// next flush (`flush_every_ms`, 500 ms by default) or an explicit
/// [`SledState::flush`].
#[derive(Debug, Clone)]
pub struct SledState {
    db: sled::Db,
}

impl SledState {
    /// Default page-cache size: small boards have 512 MiB in all; sled's own
    /// default is 1 GiB.
    pub const DEFAULT_CACHE_BYTES: u64 = 4 << 20;

    /// Open (or create) the database in `dir` with an explicit cache size.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StateError> {
        Ok(SledState {
            db: open_db(dir, cache_bytes)?,
        })
    }

    /// Use an already open database (the daemon shares one with the outbox).
    pub fn from_db(db: sled::Db) -> Self {
        SledState { db }
    }

    /// Make every applied write durable now.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, module: &str) -> Result<sled::Tree, StateError> {
        Ok(self.db.open_tree(format!("state/{module}"))?)
    }
}

impl StateStore for SledState {
    fn get(&self, module: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.tree(module)?.get(key)?.map(|v| v.to_vec()))
    }

    fn apply(&self, module: &str, writes: &[StateWrite]) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        self.tree(module)?.apply_batch(batch)?;
        Ok(())
    }

    fn usage(&self, module: &str) -> Result<u64, StateError> {
        let mut total = 0u64;
        for entry in self.tree(module)?.iter() {
            let (k, v) = entry?;
            total += (k.len() + v.len()) as u64;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn StateStore) {
        assert_eq!(store.get("m", b"k").unwrap(), None);
        store
            .apply(
                "m",
                &[
                    (b"k".to_vec(), Some(b"v1".to_vec())),
                    (b"k".to_vec(), Some(b"v2".to_vec())),
                ],
            )
            .unwrap();
        assert_eq!(store.get("m", b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(
            store.get("other", b"k").unwrap(),
            None,
            "modules are isolated"
        );
        assert_eq!(store.usage("m").unwrap(), 3);
        store.apply("m", &[(b"k".to_vec(), None)]).unwrap();
        assert_eq!(store.get("m", b"k").unwrap(), None);
    }

    #[test]
    fn memory_state() {
        exercise(&MemoryState::new());
    }

    #[test]
    fn sled_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledState::open(dir.path(), 1 << 20).unwrap();
            exercise(&s);
            s.apply("m", &[(b"keep".to_vec(), Some(b"x".to_vec()))])
                .unwrap();
            s.flush().unwrap();
        }
        let s = SledState::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.get("m", b"keep").unwrap(), Some(b"x".to_vec()));
    }
}
