//! Keys in memory: a presented key is one SHA-256 and one map read away from its state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::keys::{KeyHash, KeyRecord};

/// A key's state as this instance sees it. `rec.used` includes `pending` (amounts whose
/// commit has not come back yet); gateway holds are committed like consumes, so once
/// granted they are in the stored `used` too.
#[derive(Debug)]
pub struct KeyState {
    pub rec: KeyRecord,
    pub pending: i64,
}

#[derive(Debug)]
pub struct KeyEntry {
    state: Mutex<KeyState>,
}

impl KeyEntry {
    fn new(rec: KeyRecord) -> Self {
        Self {
            state: Mutex::new(KeyState { rec, pending: 0 }),
        }
    }

    /// The guard is held only for in-memory bookkeeping, never across an await.
    pub fn lock(&self) -> MutexGuard<'_, KeyState> {
        // A panic while holding this lock cannot leave the counters half-written (every
        // update is a plain assignment), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> KeyRecord {
        self.lock().rec.clone()
    }

    /// Reads the record under the key's lock without copying it (a whole copy is a dozen
    /// allocations: name, hint, metadata, limits); `f` must not wait.
    pub fn with<R>(&self, f: impl FnOnce(&KeyRecord) -> R) -> R {
        f(&self.lock().rec)
    }
}

#[derive(Debug, Default)]
struct Maps {
    by_hash: HashMap<KeyHash, Arc<KeyEntry>>,
    by_id: HashMap<i64, Arc<KeyEntry>>,
}

#[derive(Debug, Default)]
pub struct KeyTable {
    maps: RwLock<Maps>,
}

impl KeyTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn by_hash(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.read().by_hash.get(hash).cloned()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<KeyEntry>> {
        self.read().by_id.get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        self.read().by_id.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts or refreshes a key from the store. Amounts still pending in memory are kept
    /// on top of the stored `used`, so a refresh never forgets a reservation in flight.
    pub fn upsert(&self, rec: KeyRecord) -> Arc<KeyEntry> {
        self.refresh(rec).0
    }

    /// [`KeyTable::upsert`], saying whether memory kept a `used` above the row's.
    ///
    /// A row read beside the writer may predate commits whose pending amounts have left
    /// memory since: taking it as it stands would forget them and admit calls the store then
    /// refuses, after their upstream was already asked. So `used` never drops on a refresh;
    /// when the row says less (a reset, a refill, or a row read too early) the caller asks
    /// the writer for the counters in line (`true`).
    pub fn refresh(&self, rec: KeyRecord) -> (Arc<KeyEntry>, bool) {
        let mut maps = self.write();
        if let Some(entry) = maps.by_id.get(&rec.id).cloned() {
            let (old_hash, doubt) = {
                let mut st = entry.lock();
                let old_hash = st.rec.hash;
                let from_row = rec.used + st.pending;
                let kept = st.rec.used;
                st.rec = rec.clone();
                st.rec.used = from_row.max(kept);
                (old_hash, from_row < kept)
            };
            if old_hash != rec.hash {
                maps.by_hash.remove(&old_hash);
                maps.by_hash.insert(rec.hash, entry.clone());
            }
            (entry, doubt)
        } else {
            let entry = Arc::new(KeyEntry::new(rec.clone()));
            maps.by_hash.insert(rec.hash, entry.clone());
            maps.by_id.insert(rec.id, entry.clone());
            (entry, false)
        }
    }

    pub fn remove(&self, id: i64) {
        let mut maps = self.write();
        if let Some(entry) = maps.by_id.remove(&id) {
            let hash = entry.lock().rec.hash;
            maps.by_hash.remove(&hash);
        }
    }
}
