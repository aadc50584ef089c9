//! Users and teams as operations: create, read, edit, delete, and the owner a key names
//! resolved to a user. Shared by the admin API and the key operations; every write is
//! audited in its transaction, and memory (the ledger's budgets, a renamed user's keys)
//! follows at once here and within the follower's period on other instances.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::accounts::{Account, Scope, valid_name};
use crate::clock::SharedClock;
use crate::keyadmin::Actor;
use crate::keys::Owner;
use crate::keys::refill::period_start;
use crate::ledger::Ledger;
use crate::store::{AccountWrite, AccountWritten, AuditRecord, Store, StoreError};

/// Why an account operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("not found")]
    NotFound(Scope),
    #[error("name taken")]
    NameTaken(Scope),
    /// A user with keys, or a team with users.
    #[error("in use")]
    InUse(Scope),
    /// `teamId` names no team.
    #[error("unknown team")]
    UnknownTeam,
    /// `userId` names no user.
    #[error("unknown user")]
    UnknownUser,
    #[error("invalid name")]
    InvalidName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an edit changes; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub contact: Option<Option<String>>,
    pub team_id: Option<Option<i64>>,
    pub enabled: Option<bool>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub quota: Option<Option<i64>>,
    pub refill: Option<Option<crate::keys::Refill>>,
    pub limits: Option<crate::keys::KeyLimits>,
    pub show_keys: Option<bool>,
    /// `used` back to 0 (with `quota`, a fresh start).
    pub reset_used: bool,
}

impl AccountPatch {
    /// The names of the fields it sets, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("contact", self.contact.is_some()),
            ("teamId", self.team_id.is_some()),
            ("enabled", self.enabled.is_some()),
            ("metadata", self.metadata.is_some()),
            ("quota", self.quota.is_some()),
            ("refill", self.refill.is_some()),
            ("limits", self.limits.is_some()),
            ("showKeys", self.show_keys.is_some()),
            ("resetUsed", self.reset_used),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }
}

#[derive(Clone)]
pub struct UserAdmin {
    store: Arc<dyn Store>,
    ledger: Option<Arc<Ledger>>,
    clock: SharedClock,
}

impl UserAdmin {
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

    fn audit(&self, action: String, target: String, actor: &Actor, details: Value) -> AuditRecord {
        AuditRecord {
            ts: self.now_ms(),
            action,
            target: Some(target),
            key_id: None,
            token_hint: actor.token_hint.clone(),
            client_ip: actor.client_ip.clone(),
            details: Some(details),
        }
    }

    /// Memory catches up with a committed change (budgets, and a renamed user's keys).
    async fn publish(&self, user_keys_of: Option<i64>) {
        let Some(l) = &self.ledger else { return };
        if let Err(e) = l.reload_budgets().await {
            tracing::warn!(error = %e, "could not reload users and teams");
        }
        if let Some(uid) = user_keys_of {
            match self.store.keys_of_user(uid).await {
                Ok(keys) => {
                    for k in keys {
                        l.refresh(k).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not reload a user's keys"),
            }
        }
    }

    /// Every account of `scope`, with its counters as the store holds them.
    pub async fn list(&self, scope: Scope) -> Result<Vec<Account>, AccountError> {
        Ok(self
            .store
            .accounts()
            .await?
            .into_iter()
            .filter(|a| a.scope == scope)
            .collect())
    }

    pub async fn get(&self, scope: Scope, id: i64) -> Result<Account, AccountError> {
        match self.store.account(id).await? {
            Some(a) if a.scope == scope => Ok(a),
            _ => Err(AccountError::NotFound(scope)),
        }
    }

    async fn check_team(&self, team_id: Option<i64>) -> Result<(), AccountError> {
        match team_id {
            None => Ok(()),
            Some(t) => match self.store.account(t).await? {
                Some(a) if a.scope == Scope::Team => Ok(()),
                _ => Err(AccountError::UnknownTeam),
            },
        }
    }

    /// Creates `a` (its id, counters and creation time are the store's; `id > 0` keeps
    /// that id, for an owner id carried over).
    pub async fn create(&self, mut a: Account, actor: &Actor) -> Result<Account, AccountError> {
        a.name = a.name.trim().to_owned();
        if !valid_name(&a.name) {
            return Err(AccountError::InvalidName);
        }
        if a.scope == Scope::Team {
            a.team_id = None;
            a.contact = None;
        }
        self.check_team(a.team_id).await?;
        let now = self.now_ms();
        a.created_at = now;
        a.used = 0;
        // A budget created with a refill and no quota starts with the refill amount, and
        // the quota given now holds for the current period (as for keys).
        a.quota = a.quota.or(a.refill.map(|r| r.amount));
        a.refill_period = a.refill.map(|r| period_start(r.interval, now));
        let scope = a.scope;
        let audit = self.audit(
            format!("{}.create", scope.as_str()),
            String::new(),
            actor,
            json!({ "name": a.name, "quota": a.quota, "teamId": a.team_id }),
        );
        let w = AccountWrite {
            account: a,
            set_quota: true,
            reset_used: false,
        };
        let out = match self.store.insert_account(&w, &audit).await? {
            AccountWritten::Done(a) => *a,
            AccountWritten::NameTaken => return Err(AccountError::NameTaken(scope)),
            AccountWritten::NotFound | AccountWritten::InUse => {
                return Err(AccountError::NotFound(scope));
            }
        };
        self.publish(None).await;
        Ok(out)
    }

    pub async fn update(
        &self,
        scope: Scope,
        id: i64,
        patch: AccountPatch,
        actor: &Actor,
    ) -> Result<Account, AccountError> {
        let mut a = self.get(scope, id).await?;
        let fields = patch.fields();
        if let Some(n) = patch.name {
            a.name = n.trim().to_owned();
            if !valid_name(&a.name) {
                return Err(AccountError::InvalidName);
            }
        }
        if scope == Scope::User {
            if let Some(c) = patch.contact {
                a.contact = c;
            }
            if let Some(t) = patch.team_id {
                self.check_team(t).await?;
                a.team_id = t;
            }
            if let Some(s) = patch.show_keys {
                a.show_keys = s;
            }
        }
        if let Some(e) = patch.enabled {
            a.enabled = e;
        }
        if let Some(m) = patch.metadata {
            a.metadata = m;
        }
        if let Some(l) = patch.limits {
            a.limits = l;
        }
        let now = self.now_ms();
        let mut set_quota = false;
        if let Some(r) = patch.refill {
            a.refill = r;
            // A refill set now starts counting from the current period.
            a.refill_period = r.map(|r| period_start(r.interval, now));
            set_quota = true;
        }
        if let Some(q) = patch.quota {
            a.quota = q;
            set_quota = true;
        }
        let audit = self.audit(
            format!("{}.update", scope.as_str()),
            format!("{}:{id}", scope.as_str()),
            actor,
            json!({ "fields": fields }),
        );
        let w = AccountWrite {
            account: a,
            set_quota,
            reset_used: patch.reset_used,
        };
        let out = match self.store.update_account(&w, &audit).await? {
            AccountWritten::Done(a) => *a,
            AccountWritten::NameTaken => return Err(AccountError::NameTaken(scope)),
            _ => return Err(AccountError::NotFound(scope)),
        };
        self.publish((scope == Scope::User).then_some(id)).await;
        Ok(out)
    }

    pub async fn delete(&self, scope: Scope, id: i64, actor: &Actor) -> Result<(), AccountError> {
        self.get(scope, id).await?;
        let audit = self.audit(
            format!("{}.delete", scope.as_str()),
            format!("{}:{id}", scope.as_str()),
            actor,
            Value::Null,
        );
        match self.store.delete_account(id, &audit).await? {
            AccountWritten::Done(_) => {
                self.publish(None).await;
                Ok(())
            }
            AccountWritten::InUse => Err(AccountError::InUse(scope)),
            _ => Err(AccountError::NotFound(scope)),
        }
    }

    /// The user a key's `owner` names. `{userId}` of an existing user is that user (its
    /// name wins); `{userId, username}` of no account yet creates that user with that id
    /// (today's owners carried over); `{username}` alone is the user of that name, created
    /// when there is none. The answer is what the key stores: the user's id and name.
    pub async fn resolve_owner(&self, owner: &Owner, actor: &Actor) -> Result<Owner, AccountError> {
        let accounts = self.store.accounts().await?;
        let found = match (owner.user_id, owner.username.as_deref()) {
            (Some(id), _) => accounts.iter().find(|a| a.id == id),
            (None, Some(name)) => accounts
                .iter()
                .find(|a| a.scope == Scope::User && a.name == name.trim()),
            (None, None) => return Ok(Owner::default()),
        };
        if let Some(a) = found {
            if a.scope != Scope::User {
                return Err(AccountError::UnknownUser);
            }
            return Ok(owner_of(a));
        }
        let name = owner
            .username
            .clone()
            .filter(|n| valid_name(n))
            .unwrap_or_else(|| format!("user-{}", owner.user_id.unwrap_or(0)));
        let id = owner.user_id.filter(|&id| id > 0).unwrap_or(0);
        let created = match self.create(new_user(id, name.clone()), actor).await {
            // Another user already has the name (the owner's id is a different one): the
            // new user is told apart by a suffix rather than merged with the other.
            Err(AccountError::NameTaken(_)) => {
                // Made meanwhile by a concurrent request naming the same owner: that one.
                if id > 0
                    && let Some(a) = self.store.account(id).await?
                    && a.scope == Scope::User
                {
                    return Ok(owner_of(&a));
                }
                let suffix = if id > 0 {
                    id
                } else {
                    accounts.len() as i64 + 1
                };
                let name: String = name.chars().take(50).collect();
                self.create(new_user(id, format!("{name} ({suffix})")), actor)
                    .await?
            }
            other => other?,
        };
        Ok(owner_of(&created))
    }

    /// The user with id `id`, as a key's owner; `UnknownUser` if there is none.
    pub async fn owner_by_id(&self, id: i64) -> Result<Owner, AccountError> {
        match self.store.account(id).await? {
            Some(a) if a.scope == Scope::User => Ok(owner_of(&a)),
            _ => Err(AccountError::UnknownUser),
        }
    }
}

pub fn owner_of(a: &Account) -> Owner {
    Owner {
        user_id: Some(a.id),
        username: Some(a.name.clone()),
    }
}

/// A plain user (no budget, no team) named `name`; `id > 0` asks for that id.
pub fn new_user(id: i64, name: String) -> Account {
    Account {
        id,
        scope: Scope::User,
        name,
        contact: None,
        team_id: None,
        enabled: true,
        metadata: Default::default(),
        quota: None,
        used: 0,
        refill: None,
        refill_period: None,
        limits: Default::default(),
        show_keys: false,
        created_at: 0,
    }
}
