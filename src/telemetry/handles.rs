//! Metric handles resolved once per label values. A `counter!(name, "label" => value)` builds
//! its key on every call (an allocation per owned label value, another for the key) and
//! finds it in the recorder's registry by hashing the whole key: a gateway call records a
//! dozen metrics, which was ~30 allocations and ~10 000 instructions a call. A [`Family`]
//! keeps each handle by its label values and finds it by a hash of the values alone; the
//! values are bounded (route templates, endpoints, configured upstreams, capped model names),
//! so the family is too.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{LazyLock, RwLock};

use metrics::{Counter, Gauge, Histogram};

type Entries<H, const N: usize> = Vec<([Box<str>; N], H)>;

/// The handles of one metric, by its `N` label values.
pub struct Family<H, const N: usize> {
    make: fn(&[&str; N]) -> H,
    hasher: foldhash::fast::RandomState,
    seen: RwLock<HashMap<u64, Entries<H, N>>>,
}

impl<H: Clone, const N: usize> Family<H, N> {
    /// `make` registers the metric for label values it is given (once per distinct values).
    pub fn new(make: fn(&[&str; N]) -> H) -> Self {
        Self {
            make,
            hasher: foldhash::fast::RandomState::default(),
            seen: RwLock::new(HashMap::new()),
        }
    }

    /// The handle for these label values.
    pub fn get(&self, values: [&str; N]) -> H {
        let h = self.hasher.hash_one(values);
        let found = |entries: &Entries<H, N>| {
            entries
                .iter()
                .find(|(k, _)| k.iter().map(|s| &**s).eq(values.iter().copied()))
                .map(|(_, handle)| handle.clone())
        };
        {
            // A panic elsewhere cannot leave a half-made entry: pushes are whole.
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if let Some(handle) = seen.get(&h).and_then(found) {
                return handle;
            }
        }
        // Handles made before the recorder is installed would count nothing, forever.
        super::handle();
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        let entries = seen.entry(h).or_default();
        if let Some(handle) = found(entries) {
            return handle;
        }
        let handle = (self.make)(&values);
        entries.push((values.map(Box::from), handle.clone()));
        handle
    }
}

/// A handle of a metric without labels, made once the recorder is installed.
pub struct One<H>(LazyLock<H>);

impl<H> One<H> {
    pub const fn new(make: fn() -> H) -> Self {
        Self(LazyLock::new(make))
    }

    pub fn get(&self) -> &H {
        &self.0
    }
}

fn owned(s: &str) -> String {
    s.to_owned()
}

pub static HTTP_REQUESTS: LazyLock<Family<Counter, 3>> = LazyLock::new(|| {
    Family::new(
        |[route, method, status]| metrics::counter!(super::HTTP_REQUESTS, "route" => owned(route), "method" => owned(method), "status" => owned(status)),
    )
});

pub static HTTP_DURATION: LazyLock<Family<Histogram, 2>> = LazyLock::new(|| {
    Family::new(
        |[route, method]| metrics::histogram!(super::HTTP_DURATION, "route" => owned(route), "method" => owned(method)),
    )
});

pub static GATEWAY_REQUESTS: LazyLock<Family<Counter, 2>> = LazyLock::new(|| {
    Family::new(
        |[endpoint, outcome]| metrics::counter!(super::GATEWAY_REQUESTS, "endpoint" => owned(endpoint), "outcome" => owned(outcome)),
    )
});

pub static GATEWAY_OVERHEAD: LazyLock<Family<Histogram, 1>> = LazyLock::new(|| {
    Family::new(
        |[endpoint]| metrics::histogram!(super::GATEWAY_OVERHEAD, "endpoint" => owned(endpoint)),
    )
});

pub static TOKENS: LazyLock<Family<Counter, 2>> = LazyLock::new(|| {
    Family::new(
        |[model, kind]| metrics::counter!(super::TOKENS, "model" => owned(model), "kind" => owned(kind)),
    )
});

pub static COST: LazyLock<Family<Counter, 1>> = LazyLock::new(|| {
    Family::new(|[model]| metrics::counter!(super::COST, "model" => owned(model)))
});

pub static UPSTREAM_DURATION: LazyLock<Family<Histogram, 2>> = LazyLock::new(|| {
    Family::new(
        |[upstream, model]| metrics::histogram!(super::UPSTREAM_DURATION, "upstream" => owned(upstream), "model" => owned(model)),
    )
});

pub static UPSTREAM_TTFT: LazyLock<Family<Histogram, 2>> = LazyLock::new(|| {
    Family::new(
        |[upstream, model]| metrics::histogram!(super::UPSTREAM_TTFT, "upstream" => owned(upstream), "model" => owned(model)),
    )
});

pub static LEDGER_COMMIT: One<Histogram> = One::new(|| {
    super::handle();
    metrics::histogram!(super::LEDGER_COMMIT)
});

pub static LEDGER_BATCH: One<Histogram> = One::new(|| {
    super::handle();
    metrics::histogram!(super::LEDGER_BATCH)
});

pub static LEDGER_QUEUE: One<Gauge> = One::new(|| {
    super::handle();
    metrics::gauge!(super::LEDGER_QUEUE)
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts through a family reach the recorder under the label values given, each
    /// distinct set its own series, the same set always the same one.
    #[test]
    fn a_family_counts_each_label_set_apart() {
        let before = |route: &str, status: &str| {
            let text = super::super::handle().render();
            let needle = format!(
                "qp_http_requests_total{{route=\"{route}\",method=\"GET\",status=\"{status}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(needle.as_str()))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (a0, b0) = (before("/family/a", "200"), before("/family/a", "404"));
        for _ in 0..3 {
            HTTP_REQUESTS.get(["/family/a", "GET", "200"]).increment(1);
        }
        HTTP_REQUESTS.get(["/family/a", "GET", "404"]).increment(2);
        assert_eq!(before("/family/a", "200") - a0, 3);
        assert_eq!(before("/family/a", "404") - b0, 2);
        // The one entry per label set is reused: the map holds two sets for this route.
        let seen = HTTP_REQUESTS.seen.read().unwrap();
        let sets = seen
            .values()
            .flatten()
            .filter(|(k, _)| &*k[0] == "/family/a")
            .count();
        assert_eq!(sets, 2);
    }
}
