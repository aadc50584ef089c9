//! Users and teams as a domain: the budgets a key draws from besides its own. A key may
//! belong to a user; a user may belong to a team. A consume is granted only if the key, its
//! user and the user's team all have room (each checked after its own due refill), so a
//! team's budget is shared by its users and each user's own budget is that user's cap
//! inside it. No HTTP, no SQL.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::{Counters, KeyLimits, Refill, counters_at};

/// Which kind of budget: they share one table and one id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    User,
    Team,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Team => "team",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "team" => Some(Self::Team),
            _ => None,
        }
    }

    /// How the budget is named in a refusal's message (the seed's words are Chinese).
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::User => "用户预算",
            Self::Team => "团队预算",
        }
    }
}

/// One budget an op draws from besides its key's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetRef {
    pub scope: Scope,
    pub id: i64,
}

/// A user or a team as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: i64,
    pub scope: Scope,
    pub name: String,
    /// Users only: how to reach the person (free text).
    pub contact: Option<String>,
    /// Users only: the team whose budget the user also draws from.
    pub team_id: Option<i64>,
    pub enabled: bool,
    pub metadata: Map<String, Value>,
    pub quota: Option<i64>,
    pub used: i64,
    pub refill: Option<Refill>,
    pub refill_period: Option<i64>,
    /// `rpm`, `tpm`, `dailyRequests`, `maxConcurrent` over all the account's keys together.
    pub limits: KeyLimits,
    /// Users only: whether the holder of one of the user's keys sees the user's other keys
    /// on `/me`.
    pub show_keys: bool,
    pub created_at: i64,
}

impl Account {
    /// Quota and usage at `now_ms`, with a due refill applied to the view.
    pub fn counters(&self, now_ms: i64) -> Counters {
        counters_at(
            self.quota,
            self.used,
            self.refill,
            self.refill_period,
            now_ms,
        )
    }

    pub fn budget(&self) -> BudgetRef {
        BudgetRef {
            scope: self.scope,
            id: self.id,
        }
    }
}

/// A budget's counters as the database holds them right after a ledger batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCounters {
    pub id: i64,
    pub used: i64,
    pub quota: Option<i64>,
    pub refill_period: Option<i64>,
    pub enabled: bool,
}

/// Names are what operators search by: trimmed, 1–64 characters, no control characters.
pub fn valid_name(name: &str) -> bool {
    let n = name.trim();
    !n.is_empty() && n.chars().count() <= 64 && !n.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RefillInterval;

    #[test]
    fn a_due_refill_restores_the_budget_in_the_view() {
        let a = Account {
            id: 1,
            scope: Scope::User,
            name: "alice".into(),
            contact: None,
            team_id: None,
            enabled: true,
            metadata: Map::new(),
            quota: Some(10),
            used: 10,
            refill: Some(Refill {
                interval: RefillInterval::Daily,
                amount: 50,
            }),
            refill_period: Some(0),
            limits: KeyLimits::default(),
            show_keys: false,
            created_at: 0,
        };
        let c = a.counters(2 * 86_400_000 + 5);
        assert_eq!((c.quota, c.used, c.reset_due), (Some(50), 0, true));
        assert!(valid_name(" team a "));
        assert!(!valid_name("  "));
        assert!(!valid_name("a\u{7}b"));
        assert_eq!(Scope::parse("team"), Some(Scope::Team));
    }
}
