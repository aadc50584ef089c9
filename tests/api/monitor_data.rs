//! A New API dataset with planted cases, New API's tables on each backend, and expected
//! answers computed here, independently of the monitor's SQL.

use std::collections::{BTreeMap, BTreeSet};

/// Monday 2026-03-02 00:00:00 UTC.
pub const T0: i64 = 1_772_409_600;
pub const HOURS: i64 = 48;

#[derive(Debug, Clone)]
pub struct Log {
    pub user_id: i64,
    pub created_at: i64,
    pub kind: i64,
    pub username: String,
    pub token_name: String,
    pub model: String,
    pub quota: i64,
    pub prompt: i64,
    pub completion: i64,
    pub channel: i64,
    pub token: i64,
    pub ip: String,
}

impl Log {
    pub fn tokens(&self) -> i64 {
        self.prompt + self.completion
    }
}

/// A ranking group: (id, name) and (reqs, tokens, quota).
type Group = ((i64, String), (i64, i64, i64));

pub struct Data {
    pub logs: Vec<Log>,
    pub users: BTreeMap<i64, String>,
    pub tokens: BTreeMap<i64, (String, i64)>,
    pub channels: BTreeMap<i64, String>,
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as i64
    }
}

pub const MODELS: [&str; 3] = ["gpt-4o", "deepseek-chat", "claude-3"];
pub const BURST_KEY: i64 = 31;
pub const EVEN_KEY: i64 = 32;
pub const MANY_IP_KEY: i64 = 33;
pub const SHARED_KEY: i64 = 34;
pub const CROWDED_IP: &str = "203.0.113.7";
/// A token name a spreadsheet would run as a formula.
pub const FORMULA_NAME: &str = "=HYPERLINK(\"x\")";

pub fn generate() -> Data {
    let mut rng = Lcg(42);
    let users: BTreeMap<i64, String> = (1..=20)
        .map(|u| {
            (
                u,
                if u == 1 {
                    "张三".to_owned()
                } else {
                    format!("user{u}")
                },
            )
        })
        .collect();
    let tokens: BTreeMap<i64, (String, i64)> = (1..=40)
        .map(|t| {
            let name = if t == 7 {
                FORMULA_NAME.to_owned()
            } else {
                format!("tok-{t}")
            };
            (t, (name, (t % 20) + 1))
        })
        .collect();
    let channels: BTreeMap<i64, String> = [(1, "ch-a"), (2, "ch-b"), (3, "ch-c")]
        .into_iter()
        .map(|(i, n)| (i, n.to_owned()))
        .collect();
    let mut logs = Vec::new();
    let push = |logs: &mut Vec<Log>,
                token: i64,
                user: i64,
                at: i64,
                prompt: i64,
                ip: String,
                model: &str,
                kind: i64,
                rng: &mut Lcg| {
        let completion = 20 + rng.next(280);
        logs.push(Log {
            user_id: user,
            created_at: at,
            kind,
            username: users[&user].clone(),
            token_name: tokens.get(&token).map(|t| t.0.clone()).unwrap_or_default(),
            model: model.to_owned(),
            quota: (prompt + completion) * 2,
            prompt,
            completion,
            channel: 1 + rng.next(3),
            token,
            ip,
        });
    };
    // Ordinary traffic: keys 1..=30, each used by its owner from the owner's address.
    for _ in 0..1500 {
        let token = 1 + rng.next(30);
        let user = tokens[&token].1;
        let at = T0 + rng.next(HOURS * 3600);
        let prompt = 50 + rng.next(450);
        let model = MODELS[rng.next(3) as usize];
        push(
            &mut logs,
            token,
            user,
            at,
            prompt,
            format!("10.0.{user}.1"),
            model,
            2,
            &mut rng,
        );
    }
    // A burst: 130 requests within 50 seconds.
    let owner = tokens[&BURST_KEY].1;
    for i in 0..130 {
        push(
            &mut logs,
            BURST_KEY,
            owner,
            T0 + 7200 + (i * 50) / 130,
            100,
            format!("10.0.{owner}.1"),
            "deepseek-chat",
            2,
            &mut rng,
        );
    }
    // The same count spread evenly over the two days: no burst.
    let owner = tokens[&EVEN_KEY].1;
    for i in 0..130 {
        push(
            &mut logs,
            EVEN_KEY,
            owner,
            T0 + i * (HOURS * 3600 / 130),
            100,
            format!("10.0.{owner}.1"),
            "claude-3",
            2,
            &mut rng,
        );
    }
    // A key used from six addresses.
    let owner = tokens[&MANY_IP_KEY].1;
    for i in 0..12 {
        push(
            &mut logs,
            MANY_IP_KEY,
            owner,
            T0 + 30_000 + i * 600,
            120,
            format!("198.51.100.{}", i % 6),
            "gpt-4o",
            2,
            &mut rng,
        );
    }
    // A key shared by three users.
    for (i, user) in [3, 4, 5].iter().enumerate() {
        push(
            &mut logs,
            SHARED_KEY,
            *user,
            T0 + 40_000 + i as i64 * 60,
            150,
            format!("10.0.{user}.1"),
            "gpt-4o",
            2,
            &mut rng,
        );
    }
    // One address behind six users, each with their own key.
    for user in 1..=6 {
        let token = (1..=30).find(|t| tokens[t].1 == user).unwrap_or(1);
        push(
            &mut logs,
            token,
            user,
            T0 + 50_000 + user * 30,
            90,
            CROWDED_IP.to_owned(),
            "deepseek-chat",
            2,
            &mut rng,
        );
    }
    // Outsized requests in one model.
    for i in 0..3 {
        let token = 2 + i;
        let user = tokens[&token].1;
        push(
            &mut logs,
            token,
            user,
            T0 + 60_000 + i * 1000,
            50_000,
            format!("10.0.{user}.1"),
            "gpt-4o",
            2,
            &mut rng,
        );
    }
    // Not consumption: top-ups (type 1) and errors (type 5), also a dense burst of them.
    for i in 0..150 {
        let token = 1 + (i % 30);
        let user = tokens[&token].1;
        let kind = if i % 2 == 0 { 1 } else { 5 };
        push(
            &mut logs,
            token,
            user,
            T0 + 9000 + i / 4,
            99_999,
            CROWDED_IP.to_owned(),
            "gpt-4o",
            kind,
            &mut rng,
        );
    }
    // Calls without a key: they count as traffic but never trigger a rule.
    for i in 0..130 {
        let user = 1 + (i % 8);
        push(
            &mut logs,
            0,
            user,
            T0 + 20_000 + i / 3,
            70_000,
            CROWDED_IP.to_owned(),
            "gpt-4o",
            2,
            &mut rng,
        );
    }
    Data {
        logs,
        users,
        tokens,
        channels,
    }
}

impl Data {
    pub fn consumed(&self) -> impl Iterator<Item = &Log> {
        self.logs.iter().filter(|l| l.kind == 2)
    }

    /// reqs, tokens, users, keys, quota per `slot`-second bucket over the two days.
    pub fn series(&self, slot: i64) -> Vec<(i64, i64, i64, usize, usize, i64)> {
        let mut out = Vec::new();
        let mut b = T0;
        while b < T0 + HOURS * 3600 {
            let rows: Vec<&Log> = self
                .consumed()
                .filter(|l| l.created_at >= b && l.created_at < b + slot)
                .collect();
            let users: BTreeSet<i64> = rows.iter().map(|l| l.user_id).collect();
            let keys: BTreeSet<i64> = rows.iter().map(|l| l.token).filter(|t| *t != 0).collect();
            out.push((
                b,
                rows.len() as i64,
                rows.iter().map(|l| l.tokens()).sum(),
                users.len(),
                keys.len(),
                rows.iter().map(|l| l.quota).sum(),
            ));
            b += slot;
        }
        out
    }

    /// Top by user/token/model/channel: (key, reqs, tokens, quota), best first.
    pub fn top(&self, by: &str, metric: &str) -> Vec<(String, i64, i64, i64)> {
        let mut g: BTreeMap<(i64, String), (i64, i64, i64)> = BTreeMap::new();
        for l in self.consumed() {
            let k = match by {
                "user" => (l.user_id, String::new()),
                "token" if l.token == 0 => continue,
                "token" => (l.token, String::new()),
                "model" => (0, l.model.clone()),
                _ => (l.channel, String::new()),
            };
            let e = g.entry(k).or_default();
            e.0 += 1;
            e.1 += l.tokens();
            e.2 += l.quota;
        }
        let mut v: Vec<Group> = g.into_iter().collect();
        let m = |x: &(i64, i64, i64)| match metric {
            "reqs" => x.0,
            "tokens" => x.1,
            _ => x.2,
        };
        v.sort_by(|a, b| m(&b.1).cmp(&m(&a.1)).then(a.0.cmp(&b.0)));
        v.into_iter()
            .map(|((id, name), (r, t, q))| {
                (if by == "model" { name } else { id.to_string() }, r, t, q)
            })
            .collect()
    }

    /// Keys whose peak `window` holds at least `limit` requests: (key, peak).
    pub fn bursts(&self, window: i64, limit: usize) -> Vec<(i64, usize)> {
        let mut per: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for l in self.consumed().filter(|l| l.token != 0) {
            per.entry(l.token).or_default().push(l.created_at);
        }
        let mut out = Vec::new();
        for (k, mut ts) in per {
            ts.sort_unstable();
            let peak = (0..ts.len())
                .map(|i| ts[i..].iter().take_while(|&&t| t < ts[i] + window).count())
                .max()
                .unwrap_or(0);
            if peak >= limit {
                out.push((k, peak));
            }
        }
        out
    }

    /// Keys with ≥ users_t users or ≥ ips_t addresses: (key, users, ips).
    pub fn shared_keys(&self, users_t: usize, ips_t: usize) -> Vec<(i64, usize, usize)> {
        let mut per: BTreeMap<i64, (BTreeSet<i64>, BTreeSet<String>)> = BTreeMap::new();
        for l in self.consumed().filter(|l| l.token != 0) {
            let e = per.entry(l.token).or_default();
            e.0.insert(l.user_id);
            if !l.ip.is_empty() {
                e.1.insert(l.ip.clone());
            }
        }
        per.into_iter()
            .filter(|(_, (u, i))| u.len() >= users_t || i.len() >= ips_t)
            .map(|(k, (u, i))| (k, u.len(), i.len()))
            .collect()
    }

    /// Addresses behind ≥ t users (keyed calls only): (ip, users).
    pub fn crowded_ips(&self, t: usize) -> Vec<(String, usize)> {
        let mut per: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for l in self.consumed().filter(|l| l.token != 0 && !l.ip.is_empty()) {
            per.entry(l.ip.clone()).or_default().insert(l.user_id);
        }
        per.into_iter()
            .filter(|(_, u)| u.len() >= t)
            .map(|(ip, u)| (ip, u.len()))
            .collect()
    }

    /// Requests above mean + sigma·std of their model (population, ≥ 30 samples).
    pub fn outsized(&self, sigma: f64) -> Vec<(i64, i64)> {
        let mut per: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for l in self.consumed().filter(|l| l.token != 0) {
            per.entry(l.model.clone()).or_default().push(l.tokens());
        }
        let mut thr = BTreeMap::new();
        for (m, v) in &per {
            if v.len() < 30 {
                continue;
            }
            let n = v.len() as f64;
            let mean = v.iter().sum::<i64>() as f64 / n;
            let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
            // The monitor's floor (`min_tokens`, default 10 000) as well as σ.
            thr.insert(m.clone(), (mean + sigma * var.sqrt()).max(9_999.5));
        }
        let mut out: Vec<(i64, i64)> = self
            .consumed()
            .filter(|l| l.token != 0 && thr.get(&l.model).is_some_and(|t| l.tokens() as f64 > *t))
            .map(|l| (l.token, l.tokens()))
            .collect();
        out.sort_by_key(|o| std::cmp::Reverse(o.1));
        out
    }
}
