//! What OTA keeps in sled (tree `ota`), every write flushed before it is
//! relied on:
//!
//! ```text
//! release/<name>    highest release counter accepted (u64 BE) — written before activation
//! floor             latest time seen, unix seconds (i64 BE)
//! keyset            the current signed key set (its bytes, re-verified at start)
//! keyset_version    its version (u64 BE)
//! active/<name>     the bundle running now (re-verified at start)
//! previous/<name>   the bundle it replaced (absent: the configured module)
//! ```

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("OTA storage: {0}")]
pub struct StoreError(#[from] sled::Error);

/// The OTA tree.
#[derive(Debug, Clone)]
pub struct OtaStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(prefix: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + name.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

impl OtaStore {
    /// Open the `ota` tree of `db`.
    pub fn open(db: &sled::Db) -> Result<OtaStore, StoreError> {
        Ok(OtaStore {
            db: db.clone(),
            tree: db.open_tree("ota")?,
        })
    }

    fn get_u64(&self, k: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree
            .get(k)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Make everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The highest release accepted for `name`.
    pub fn release(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.get_u64(&key("release/", name))
    }

    /// Record `release` for `name` and flush: from here on, that release and
    /// every lower one are refused, whatever happens next.
    pub fn set_release(&self, name: &str, release: u64) -> Result<(), StoreError> {
        self.tree
            .insert(key("release/", name), &release.to_be_bytes())?;
        self.flush()
    }

    /// The time floor, unix seconds (0 if none yet).
    pub fn floor(&self) -> Result<i64, StoreError> {
        Ok(self
            .tree
            .get(b"floor")?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Raise the floor to `t` if it is higher; returns the floor in force.
    pub fn raise_floor(&self, t: i64) -> Result<i64, StoreError> {
        let floor = self.floor()?;
        if t > floor {
            self.tree.insert(b"floor", &t.to_be_bytes())?;
            return Ok(t);
        }
        Ok(floor)
    }

    /// The stored key set bundle and its version.
    pub fn keyset(&self) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let bytes = self.tree.get(b"keyset")?;
        let version = self.get_u64(b"keyset_version")?;
        Ok(match (bytes, version) {
            (Some(b), Some(v)) => Some((b.to_vec(), v)),
            _ => None,
        })
    }

    /// Store a verified key set and flush.
    pub fn set_keyset(&self, bytes: &[u8], version: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(b"keyset".as_slice(), bytes);
        batch.insert(b"keyset_version".as_slice(), &version.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.flush()
    }

    /// The bundle active for `name`.
    pub fn active(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key("active/", name))?.map(|v| v.to_vec()))
    }

    /// Every active bundle: (name, bytes).
    pub fn all_active(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"active/") {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[b"active/".len()..]).into_owned();
            out.push((name, v.to_vec()));
        }
        Ok(out)
    }

    /// `bundle` became active for `name`; the one before it is kept for a
    /// rollback. Flushed.
    pub fn activate(&self, name: &str, bundle: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        match self.tree.get(key("active/", name))? {
            Some(prev) => batch.insert(key("previous/", name), prev),
            None => batch.remove(key("previous/", name)),
        }
        batch.insert(key("active/", name), bundle);
        self.tree.apply_batch(batch)?;
        self.flush()
    }

    /// The active bundle for `name` was rolled back: the previous one (or
    /// the configured module) is active again. Flushed.
    pub fn roll_back(&self, name: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        match self.tree.get(key("previous/", name))? {
            Some(prev) => batch.insert(key("active/", name), prev),
            None => batch.remove(key("active/", name)),
        }
        batch.remove(key("previous/", name));
        self.tree.apply_batch(batch)?;
        self.flush()
    }

    /// Forget the active bundle of `name` (it no longer verifies); the
    /// configured module runs. Flushed.
    pub fn deactivate(&self, name: &str) -> Result<(), StoreError> {
        self.tree.remove(key("active/", name))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_floor_and_rollback_chain() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::open_db(dir.path(), 1 << 20).unwrap();
        let s = OtaStore::open(&db).unwrap();
        assert_eq!(s.release("m").unwrap(), None);
        s.set_release("m", 3).unwrap();
        assert_eq!(s.release("m").unwrap(), Some(3));
        assert_eq!(s.raise_floor(100).unwrap(), 100);
        assert_eq!(s.raise_floor(50).unwrap(), 100);
        s.activate("m", b"v1").unwrap();
        s.activate("m", b"v2").unwrap();
        assert_eq!(s.active("m").unwrap().as_deref(), Some(&b"v2"[..]));
        s.roll_back("m").unwrap();
        assert_eq!(s.active("m").unwrap().as_deref(), Some(&b"v1"[..]));
        s.roll_back("m").unwrap();
        assert_eq!(s.active("m").unwrap(), None);
        s.activate("n", b"x").unwrap();
        assert_eq!(s.all_active().unwrap(), [("n".to_string(), b"x".to_vec())]);
        s.set_keyset(b"ks", 4).unwrap();
        assert_eq!(s.keyset().unwrap(), Some((b"ks".to_vec(), 4)));
    }
}
