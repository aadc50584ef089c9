//! Invite codes: an operator makes a code that a person redeems (`POST /me/redeem`) for a
//! new key made from the code's template, at most `uses` times, until `valid_until`. Only the
//! code's SHA-256 is stored; every creation, revocation and redemption is audited (the
//! redemption names the key made and the address it went to). Redemptions per client
//! address are limited against farming.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::keyadmin::{Actor, CreateSpec, IssuedKey, KeyAdmin};
use crate::keys::format::random_base62;
use crate::keys::{KeyLimits, Owner};
use crate::store::{AuditRecord, InviteClaim, InviteRecord, Store, StoreError};
use crate::useradmin::{AccountError, UserAdmin, new_user, owner_of};

/// What each key made from a code gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteTemplate {
    pub quota: Option<i64>,
    /// The key's expiry (epoch ms).
    pub expires_at: Option<i64>,
    pub limits: KeyLimits,
    pub prefix: Option<String>,
    pub owner: Option<Owner>,
    pub name: Option<String>,
    /// Each redemption makes a new user in this team (when no `owner` is set).
    #[serde(default)]
    pub team_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("unknown code")]
    Unknown,
    #[error("no use left")]
    Exhausted,
    #[error("expired")]
    Expired,
    #[error("too many redemptions from this address")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.trim().as_bytes()).to_vec()
}

fn hint(code: &str) -> String {
    let n = code.chars().count();
    let head: String = code.chars().take(8).collect();
    let tail: String = code.chars().skip(n.saturating_sub(4)).collect();
    format!("{head}…{tail}")
}

/// Redemptions per client address within an hour.
#[derive(Debug)]
pub struct RedeemLimiter {
    per_hour: usize,
    seen: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

impl RedeemLimiter {
    pub fn new(per_hour: usize) -> Self {
        Self {
            per_hour,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt from `ip` at `now_ms`; false when over the limit.
    pub fn admit(&self, ip: Option<IpAddr>, now_ms: i64) -> bool {
        let (Some(ip), true) = (ip, self.per_hour > 0) else {
            return true;
        };
        // Plain counters behind the lock: usable after a panic elsewhere.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, q| q.back().is_some_and(|&t| t > now_ms - 3_600_000));
        }
        let q = seen.entry(ip).or_default();
        while q.front().is_some_and(|&t| t <= now_ms - 3_600_000) {
            q.pop_front();
        }
        if q.len() >= self.per_hour {
            return false;
        }
        q.push_back(now_ms);
        true
    }
}

fn audit(action: &str, id: Option<i64>, actor: &Actor, now_ms: i64, details: Value) -> AuditRecord {
    AuditRecord {
        ts: now_ms,
        action: action.to_owned(),
        target: id.map(|id| format!("invite:{id}")),
        key_id: None,
        token_hint: actor.token_hint.clone(),
        client_ip: actor.client_ip.clone(),
        details: Some(details),
    }
}

/// Makes a code; returns it (the only time it exists) and its id.
pub async fn create(
    store: &dyn Store,
    template: &InviteTemplate,
    uses: i64,
    valid_until: Option<i64>,
    actor: &Actor,
    now_ms: i64,
) -> Result<(String, i64), StoreError> {
    let code = format!(
        "inv_{}",
        random_base62(24).map_err(|e| StoreError::Other(format!("random source: {e}")))?
    );
    let rec = InviteRecord {
        id: 0,
        code_hash: code_hash(&code),
        hint: hint(&code),
        spec: serde_json::to_string(template).unwrap_or_default(),
        uses,
        used: 0,
        valid_until,
        created_ms: now_ms,
    };
    let a = audit(
        "invite.create",
        None,
        actor,
        now_ms,
        json!({"hint": rec.hint, "uses": uses, "validUntil": valid_until, "quota": template.quota}),
    );
    let id = store.insert_invite(&rec, &a).await?;
    Ok((code, id))
}

/// Redeems `code` for a new key, from `ip`.
pub async fn redeem(
    store: &dyn Store,
    (keys, users): (&KeyAdmin, &UserAdmin),
    limiter: &RedeemLimiter,
    code: &str,
    ip: Option<IpAddr>,
    now_ms: i64,
) -> Result<(IssuedKey, i64), InviteError> {
    if !limiter.admit(ip, now_ms) {
        return Err(InviteError::TooMany);
    }
    let invite = match store.claim_invite(&code_hash(code), now_ms).await? {
        InviteClaim::Claimed(r) => r,
        InviteClaim::Unknown => return Err(InviteError::Unknown),
        InviteClaim::Exhausted => return Err(InviteError::Exhausted),
        InviteClaim::Expired => return Err(InviteError::Expired),
    };
    let t: InviteTemplate = serde_json::from_str(&invite.spec).unwrap_or_default();
    let mut metadata = Map::new();
    metadata.insert("invite".into(), invite.id.into());
    let spec = CreateSpec {
        // Filled from the configuration when the code was made.
        prefix: t.prefix.clone().unwrap_or_else(|| "qp".to_owned()),
        quota: t.quota,
        expires_at: t.expires_at,
        name: Some(
            t.name
                .clone()
                .unwrap_or_else(|| format!("invite {}", invite.hint)),
        ),
        count: 1,
        metadata,
        owner: t.owner.clone(),
        limits: t.limits.clone(),
        refill: None,
    };
    let actor = Actor {
        token_hint: Some(format!("invite {}", invite.hint)),
        client_ip: ip.map(|i| i.to_string()),
    };
    let mut spec = spec;
    if spec.owner.is_none()
        && let Some(team) = t.team_id
    {
        // A user of its own in the team: the team's budget is shared, the person is new.
        let mut u = new_user(0, format!("invite {} #{}", invite.hint, invite.used));
        u.team_id = Some(team);
        match users.create(u, &actor).await {
            Ok(made) => spec.owner = Some(owner_of(&made)),
            Err(e) => {
                store.unclaim_invite(invite.id).await?;
                return Err(InviteError::Store(match e {
                    AccountError::Store(e) => e,
                    other => StoreError::Other(format!("invite user: {other}")),
                }));
            }
        }
    }
    let issued = match keys.create(&spec, &actor).await {
        Ok(mut v) if !v.is_empty() => v.remove(0),
        Ok(_) => {
            store.unclaim_invite(invite.id).await?;
            return Err(InviteError::Store(StoreError::Other("no key made".into())));
        }
        Err(e) => {
            store.unclaim_invite(invite.id).await?;
            return Err(e.into());
        }
    };
    let a = audit(
        "invite.redeem",
        Some(invite.id),
        &actor,
        now_ms,
        json!({"keyId": issued.record.id, "key": issued.record.hint, "use": invite.used}),
    );
    store.insert_audit(&a).await?;
    Ok((issued, invite.id))
}

pub async fn revoke(
    store: &dyn Store,
    id: i64,
    actor: &Actor,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let a = audit("invite.delete", Some(id), actor, now_ms, json!({}));
    store.delete_invite(id, &a).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redemptions_per_address_are_limited_within_an_hour() {
        let l = RedeemLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit(Some(a), 0));
        assert!(l.admit(Some(a), 1));
        assert!(!l.admit(Some(a), 2));
        assert!(l.admit(Some(b), 2), "per address");
        assert!(l.admit(Some(a), 3_600_001), "an hour later");
        assert_eq!(hint("inv_abcdefghijklmnop"), "inv_abcd…mnop");
    }
}
