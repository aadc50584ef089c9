//! Users' and teams' budgets in memory, beside the keys: a key's consume is admitted only if
//! its user and the user's team can afford it too. Locks are always taken key → user →
//! team, and the writer takes one at a time, so they never wait on each other in a cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::accounts::{Account, BudgetRef};

/// A budget as this instance sees it: `acct.used` includes `pending`, like a key's.
#[derive(Debug)]
pub struct BudgetState {
    pub acct: Account,
    pub pending: i64,
    /// How many of the writer's answers have set `acct`'s counters (see
    /// [`BudgetTable::refresh_all`]).
    pub answers: u64,
}

#[derive(Debug)]
pub struct BudgetEntry {
    state: Mutex<BudgetState>,
}

impl BudgetEntry {
    /// Held only for in-memory bookkeeping, never across an await (a poisoned lock is safe
    /// to use for the same reason as a key's: every update is a plain assignment).
    pub fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
pub struct BudgetTable {
    map: RwLock<HashMap<i64, Arc<BudgetEntry>>>,
}

impl BudgetTable {
    pub fn get(&self, id: i64) -> Option<Arc<BudgetEntry>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Inserts or refreshes an account; amounts still pending stay on top of `used`.
    pub fn upsert(&self, acct: Account) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&acct.id) {
            Some(e) => {
                let mut st = e.lock();
                let pending = st.pending;
                st.acct = acct;
                st.acct.used += pending;
            }
            None => {
                map.insert(
                    acct.id,
                    Arc::new(BudgetEntry {
                        state: Mutex::new(BudgetState {
                            acct,
                            pending: 0,
                            answers: 0,
                        }),
                    }),
                );
            }
        }
    }

    /// Replaces the whole table by what the store holds (accounts gone are dropped).
    pub fn replace_all(&self, accounts: Vec<Account>) {
        let live: std::collections::HashSet<i64> = accounts.iter().map(|a| a.id).collect();
        for a in accounts {
            self.upsert(a);
        }
        self.retain(&live);
    }

    fn retain(&self, live: &std::collections::HashSet<i64>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| live.contains(id));
    }

    /// How many writer answers each budget has taken so far: read before the store's rows,
    /// handed to [`BudgetTable::refresh_all`] with them.
    pub fn answers(&self) -> HashMap<i64, u64> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, e)| (*id, e.lock().answers))
            .collect()
    }

    /// [`BudgetTable::replace_all`] for rows read beside the writer, when `answers` was
    /// taken before the read: a budget the writer answered for meanwhile may have had
    /// commits land that its row predates, and taking it would forget them (memory would
    /// admit calls the store refuses after their upstream was asked). Those are left as
    /// they are and their ids returned, to be read again.
    pub fn refresh_all(&self, accounts: Vec<Account>, answers: &HashMap<i64, u64>) -> Vec<i64> {
        let live: std::collections::HashSet<i64> = accounts.iter().map(|a| a.id).collect();
        let mut moved = Vec::new();
        for a in accounts {
            match self.get(a.id) {
                Some(e) => {
                    let mut st = e.lock();
                    if answers.get(&a.id).is_some_and(|n| *n != st.answers) {
                        moved.push(a.id);
                        continue;
                    }
                    let pending = st.pending;
                    st.acct = a;
                    st.acct.used += pending;
                }
                None => self.upsert(a),
            }
        }
        self.retain(&live);
        moved
    }

    /// The budgets a key of user `user_id` draws from: the user, then its team. Only those
    /// known here (the ledger loads a key's user before its first consume, see
    /// `Ledger::authenticate`), so what memory counts and what the store is asked to check
    /// are the same budgets.
    pub fn chain(&self, user_id: Option<i64>) -> (Vec<BudgetRef>, Vec<Arc<BudgetEntry>>) {
        let Some(user) = user_id.and_then(|uid| self.get(uid)) else {
            return (Vec::new(), Vec::new());
        };
        let (user_ref, team_id) = {
            let st = user.lock();
            (st.acct.budget(), st.acct.team_id)
        };
        let mut refs = vec![user_ref];
        let mut entries = vec![user];
        if let Some(team) = team_id.and_then(|t| self.get(t)) {
            refs.push(team.lock().acct.budget());
            entries.push(team);
        }
        (refs, entries)
    }

    /// The entries of `refs` known here, in the same order.
    pub fn entries(&self, refs: &[BudgetRef]) -> Vec<Arc<BudgetEntry>> {
        refs.iter().filter_map(|r| self.get(r.id)).collect()
    }
}
