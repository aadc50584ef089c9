//! The unit amounts are shown and read in for the request being served: set around every
//! request by the server's outermost layer, so answer shapes stay plain types and one process
//! may run servers of different billing modes (the tests do).

use super::money::Currency;

tokio::task_local! {
    static UNIT: Currency;
}

/// The unit of the current request (points outside any request).
pub fn unit() -> Currency {
    UNIT.try_with(|c| *c).unwrap_or(Currency::Points)
}

/// Runs `f` with amounts shown and read in `unit`.
pub async fn with_unit<F: Future>(unit: Currency, f: F) -> F::Output {
    in_unit(unit, f).await
}

/// `f`, to run with amounts shown and read in `unit`: a future with a name, for a
/// hand-written service's own future.
pub fn in_unit<F: Future>(
    unit: Currency,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<Currency, F> {
    UNIT.scope(unit, f)
}
