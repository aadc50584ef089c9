//! What requests go through besides their handler: once for every request (`shell`: request
//! id, client address, panics, security headers, metrics), around each group of routes
//! (`guard`: its error family, body and time limits, wrong credentials), and the request body
//! held to its time limits (`timed_body`).

mod guard;
mod shell;
mod timed_body;

pub use guard::{Guard, GuardLayer, Guarded, unmatched};
pub use shell::{Context, Shell, ShellFuture};

#[cfg(test)]
mod tests;
