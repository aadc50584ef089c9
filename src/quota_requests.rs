//! Requests for more quota: a key holder files one on `/me` (one pending per key), an
//! operator approves (the amount is added to the key's quota, or — for a key without one —
//! to its user's budget) or denies it. Each decision is taken once, by one conditional
//! update, and audited; the `quota_request` alert rule announces pending requests.

use std::sync::Arc;

use serde_json::json;

use crate::accounts::Scope;
use crate::keyadmin::{Actor, KeyAdmin};
use crate::keys::KeyRecord;
use crate::store::{AuditRecord, KeyPatch, QuotaRequestRecord, Store, StoreError};
use crate::useradmin::{AccountError, AccountPatch, UserAdmin};

/// The largest quota an approval can make (as the admin API's).
const MAX_QUOTA: i64 = 2_000_000_000_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The key already has a request waiting.
    #[error("a request is pending")]
    Pending,
    #[error("no such request")]
    NotFound,
    /// Approved or denied already.
    #[error("decided already")]
    Decided,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccountError> for RequestError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Store(e) => Self::Store(e),
            other => Self::Store(StoreError::Other(format!("grant: {other}"))),
        }
    }
}

/// Where an approval puts the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Key,
    User(i64),
    /// Neither the key nor its user has a limit: nothing to add.
    Nothing,
}

fn audit(
    action: &str,
    id: Option<i64>,
    actor: &Actor,
    now: i64,
    d: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        ts: now,
        action: action.to_owned(),
        target: id.map(|id| format!("quota_request:{id}")),
        key_id: None,
        token_hint: actor.token_hint.clone(),
        client_ip: actor.client_ip.clone(),
        details: Some(d),
    }
}

/// Files a request for `amount` more on `key`.
pub async fn file(
    store: &dyn Store,
    key: &KeyRecord,
    amount: i64,
    reason: Option<String>,
    actor: &Actor,
    now: i64,
) -> Result<i64, RequestError> {
    let r = QuotaRequestRecord {
        id: 0,
        key_id: key.id,
        user_id: key.owner.as_ref().and_then(|o| o.user_id),
        amount,
        reason,
        status: "pending".into(),
        created_ms: now,
        decided_ms: None,
        decided_by: None,
        granted: None,
        note: None,
    };
    let a = audit(
        "quota_request.create",
        None,
        actor,
        now,
        json!({"keyId": key.id, "key": key.hint, "amount": amount}),
    );
    store
        .insert_quota_request(&r, &a)
        .await?
        .ok_or(RequestError::Pending)
}

async fn pending(store: &dyn Store, id: i64) -> Result<QuotaRequestRecord, RequestError> {
    match store.quota_request(id).await? {
        None => Err(RequestError::NotFound),
        Some(r) if r.status != "pending" => Err(RequestError::Decided),
        Some(r) => Ok(r),
    }
}

/// The operations a decision needs.
pub struct Deciders<'a> {
    pub store: &'a Arc<dyn Store>,
    pub keys: &'a KeyAdmin,
    pub users: &'a UserAdmin,
}

/// Approves request `id`, granting `amount` (the amount asked when `None`).
pub async fn approve(
    d: &Deciders<'_>,
    id: i64,
    amount: Option<i64>,
    note: Option<String>,
    actor: &Actor,
    now: i64,
) -> Result<(QuotaRequestRecord, Grant), RequestError> {
    let mut r = pending(d.store.as_ref(), id).await?;
    let granted = amount.unwrap_or(r.amount);
    let key = d.keys.find(&r.key_id.to_string()).await?;
    let grant = match &key {
        Some(k) if k.quota.is_some() => Grant::Key,
        _ => match r.user_id {
            Some(u) => match d.users.get(Scope::User, u).await {
                Ok(a) if a.quota.is_some() => Grant::User(u),
                _ => Grant::Nothing,
            },
            None => Grant::Nothing,
        },
    };
    r.status = "approved".into();
    r.decided_ms = Some(now);
    r.decided_by = actor.token_hint.clone();
    r.granted = Some(if grant == Grant::Nothing { 0 } else { granted });
    r.note = note;
    let a = audit(
        "quota_request.approve",
        Some(id),
        actor,
        now,
        json!({"keyId": r.key_id, "granted": r.granted, "to": match grant {
            Grant::Key => "key", Grant::User(_) => "user", Grant::Nothing => "none" }}),
    );
    // Decided first (once, whoever is first), then granted; a grant that fails reopens it.
    if !d.store.decide_quota_request(&r, Some(&a)).await? {
        return Err(RequestError::Decided);
    }
    let applied = match grant {
        Grant::Key => d
            .keys
            .patch(
                r.key_id,
                KeyPatch {
                    quota_add: Some((granted, MAX_QUOTA)),
                    ..Default::default()
                },
                "key.quota_add",
                actor,
                Some(json!({"quotaRequest": id, "add": granted})),
            )
            .await
            .map(|_| ())
            .map_err(RequestError::from),
        Grant::User(u) => add_to_user(d.users, u, granted, actor).await,
        Grant::Nothing => Ok(()),
    };
    if let Err(e) = applied {
        d.store.reopen_quota_request(id).await?;
        return Err(e);
    }
    Ok((r, grant))
}

async fn add_to_user(
    users: &UserAdmin,
    id: i64,
    amount: i64,
    actor: &Actor,
) -> Result<(), RequestError> {
    let u = users.get(Scope::User, id).await?;
    let quota = u.quota.map(|q| q.saturating_add(amount).min(MAX_QUOTA));
    let patch = AccountPatch {
        quota: Some(quota),
        ..Default::default()
    };
    users.update(Scope::User, id, patch, actor).await?;
    Ok(())
}

pub async fn deny(
    store: &dyn Store,
    id: i64,
    note: Option<String>,
    actor: &Actor,
    now: i64,
) -> Result<QuotaRequestRecord, RequestError> {
    let mut r = pending(store, id).await?;
    r.status = "denied".into();
    r.decided_ms = Some(now);
    r.decided_by = actor.token_hint.clone();
    r.note = note;
    let a = audit(
        "quota_request.deny",
        Some(id),
        actor,
        now,
        json!({"keyId": r.key_id}),
    );
    if !store.decide_quota_request(&r, Some(&a)).await? {
        return Err(RequestError::Decided);
    }
    Ok(r)
}
