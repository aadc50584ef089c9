//! What each query aggregates, before ordering, zero-filling, names and JSON. The SQL path and
//! the rollup both produce these, so everything after them is shared and the two engines
//! cannot drift apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Per bucket start (unix s): reqs, tokens, distinct users, distinct keys, quota.
pub type Buckets = HashMap<i64, [i64; 5]>;

/// One group of a ranking: an integer key (`id`) or a text key (`name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub reqs: i64,
    pub tokens: i64,
    pub quota: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub reqs: i64,
    pub tokens: i64,
    pub quota: i64,
    pub users: i64,
    pub keys: i64,
    pub models: i64,
}

/// Request times (unix s, ascending) of each key with enough requests to burst, and the
/// key's most frequent user.
#[derive(Debug, Default)]
pub struct KeyTimes {
    pub per_key: BTreeMap<i64, Vec<i64>>,
    pub owners: HashMap<i64, i64>,
}

/// A shared key or a crowded IP: distinct users, distinct IPs (keys only), requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared<K> {
    pub key: K,
    pub users: i64,
    pub ips: i64,
    pub requests: i64,
}

#[derive(Debug, Default)]
pub struct Sharing<K> {
    pub hits: Vec<Shared<K>>,
    pub users_of: HashMap<K, BTreeSet<i64>>,
}

/// Count, sum and sum of squares of tokens per request, per model (or `*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moments {
    pub n: i64,
    pub s1: i64,
    pub s2: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigRow {
    pub key: i64,
    pub user: i64,
    pub group: String,
    pub tokens: i64,
    pub ts: i64,
}

/// Which name a ranking or a rule needs for its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOf {
    User,
    Token,
}
