//! Key administration as operations: create, find, patch, reset, enable/disable, rotate,
//! delete. Shared by the admin HTTP API and the CLI; every write is audited in the same
//! transaction, which is also how a running server learns of the CLI's edits.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::clock::SharedClock;
use crate::keys::format::looks_like_full_key;
use crate::keys::refill::period_start;
use crate::keys::{KeyLimits, KeyRecord, Owner, Refill, generate_key, hash_key};
use crate::ledger::Ledger;
use crate::store::{AuditRecord, KeyPatch, NewKey, Store, StoreError, StoreResult};

/// Who made a change, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub token_hint: Option<String>,
    pub client_ip: Option<String>,
}

impl Actor {
    pub fn cli() -> Self {
        Self {
            token_hint: Some("cli".to_owned()),
            client_ip: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub prefix: String,
    pub quota: Option<i64>,
    pub expires_at: Option<i64>,
    pub name: Option<String>,
    pub count: u32,
    pub metadata: Map<String, Value>,
    pub owner: Option<Owner>,
    pub limits: KeyLimits,
    pub refill: Option<Refill>,
}

/// A freshly created or rotated key: the only moment its full string exists.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub full: String,
    pub record: KeyRecord,
}

#[derive(Clone)]
pub struct KeyAdmin {
    store: Arc<dyn Store>,
    ledger: Option<Arc<Ledger>>,
    clock: SharedClock,
}

fn rng_error(e: getrandom::Error) -> StoreError {
    StoreError::Other(format!("random source: {e}"))
}

impl KeyAdmin {
    pub fn new(store: Arc<dyn Store>, ledger: Option<Arc<Ledger>>, clock: SharedClock) -> Self {
        Self {
            store,
            ledger,
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn audit(
        &self,
        action: &str,
        key_id: Option<i64>,
        actor: &Actor,
        details: Option<Value>,
    ) -> AuditRecord {
        AuditRecord {
            ts: self.now_ms(),
            action: action.to_owned(),
            target: key_id.map(|id| id.to_string()),
            key_id,
            token_hint: actor.token_hint.clone(),
            client_ip: actor.client_ip.clone(),
            details,
        }
    }

    async fn publish(&self, rec: &KeyRecord) {
        if let Some(l) = &self.ledger {
            l.refresh(rec.clone()).await;
        }
    }

    pub async fn create(&self, spec: &CreateSpec, actor: &Actor) -> StoreResult<Vec<IssuedKey>> {
        let now = self.now_ms();
        let mut fulls = Vec::with_capacity(spec.count as usize);
        let mut news = Vec::with_capacity(spec.count as usize);
        for _ in 0..spec.count {
            let g = generate_key(&spec.prefix).map_err(rng_error)?;
            news.push(NewKey {
                hash: g.hash,
                hint: g.hint.clone(),
                name: spec.name.clone(),
                prefix: spec.prefix.clone(),
                quota: spec.quota.or(spec.refill.map(|r| r.amount)),
                expires_at: spec.expires_at,
                created_at: now,
                metadata: spec.metadata.clone(),
                owner: spec.owner.clone(),
                limits: spec.limits.clone(),
                refill: spec.refill,
                // The quota given at creation holds for the current period.
                refill_period: spec.refill.map(|r| period_start(r.interval, now)),
            });
            fulls.push(g.full);
        }
        let details = json!({ "quota": spec.quota, "prefix": spec.prefix, "name": spec.name });
        let audit = self.audit("key.create", None, actor, Some(details));
        let recs = self.store.insert_keys(&news, &audit).await?;
        let issued: Vec<IssuedKey> = fulls
            .into_iter()
            .zip(recs)
            .map(|(full, record)| IssuedKey { full, record })
            .collect();
        for k in &issued {
            self.publish(&k.record).await;
        }
        Ok(issued)
    }

    /// Finds a key by its full string or by its numeric id. From memory when this process
    /// serves traffic (counters include consumes still committing), else from the store.
    pub async fn find(&self, key_or_id: &str) -> StoreResult<Option<KeyRecord>> {
        // Exactly as given: `/admin/keys/%201` or `+1` is not key 1.
        if looks_like_full_key(key_or_id) {
            let hash = hash_key(key_or_id);
            if let Some(l) = &self.ledger
                && let Some(e) = l.table().by_hash(&hash)
            {
                return Ok(Some(e.snapshot()));
            }
            return self.store.key_by_hash(&hash).await;
        }
        if key_or_id.is_empty() || !key_or_id.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let Ok(id) = key_or_id.parse::<i64>() else {
            return Ok(None);
        };
        match &self.ledger {
            Some(l) => Ok(l.entry_by_id(id).await?.map(|e| e.snapshot())),
            None => self.store.key_by_id(id).await,
        }
    }

    pub async fn all(&self) -> StoreResult<Vec<KeyRecord>> {
        match &self.ledger {
            Some(l) => Ok(l.table().all().iter().map(|e| e.snapshot()).collect()),
            None => self.store.load_keys().await,
        }
    }

    pub async fn patch(
        &self,
        id: i64,
        mut patch: KeyPatch,
        action: &str,
        actor: &Actor,
        details: Option<Value>,
    ) -> StoreResult<Option<KeyRecord>> {
        if let Some(Some(r)) = patch.refill {
            // A refill set now starts counting from the current period.
            patch.refill_period = Some(Some(period_start(r.interval, self.now_ms())));
        }
        let audit = self.audit(action, Some(id), actor, details);
        let rec = self.store.update_key(id, &patch, &audit).await?;
        if let Some(r) = &rec {
            self.publish(r).await;
        }
        Ok(rec)
    }

    /// Sets the quota (unchanged when `new_quota` is `None`) and starts `used` from zero.
    pub async fn reset(
        &self,
        rec: &KeyRecord,
        new_quota: Option<Option<i64>>,
        actor: &Actor,
    ) -> StoreResult<Option<KeyRecord>> {
        let patch = KeyPatch {
            quota: new_quota,
            used: Some(0),
            // A manual reset stands for the current refill period.
            refill_period: rec
                .refill
                .map(|r| Some(period_start(r.interval, self.now_ms()))),
            ..Default::default()
        };
        let details = json!({ "newQuota": new_quota.flatten(), "previousUsed": rec.used });
        self.patch(rec.id, patch, "key.reset", actor, Some(details))
            .await
    }

    pub async fn set_enabled(
        &self,
        id: i64,
        enabled: bool,
        actor: &Actor,
    ) -> StoreResult<Option<KeyRecord>> {
        let patch = KeyPatch {
            enabled: Some(enabled),
            ..Default::default()
        };
        let action = if enabled { "key.enable" } else { "key.disable" };
        self.patch(id, patch, action, actor, None).await
    }

    /// New secret, same id, quota and history; the old secret stops working at once.
    pub async fn rotate(&self, rec: &KeyRecord, actor: &Actor) -> StoreResult<Option<IssuedKey>> {
        let g = generate_key(&rec.prefix).map_err(rng_error)?;
        let patch = KeyPatch {
            new_secret: Some((g.hash, g.hint.clone())),
            ..Default::default()
        };
        let updated = self.patch(rec.id, patch, "key.rotate", actor, None).await?;
        Ok(updated.map(|record| IssuedKey {
            full: g.full,
            record,
        }))
    }

    pub async fn delete(&self, id: i64, actor: &Actor) -> StoreResult<bool> {
        let audit = self.audit("key.delete", Some(id), actor, None);
        let gone = self.store.delete_key(id, &audit).await?;
        if gone && let Some(l) = &self.ledger {
            l.forget(id);
        }
        Ok(gone)
    }
}
