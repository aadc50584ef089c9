//! What every handler of the quota, admin and gateway APIs shares: the configuration and
//! the services. Below the handlers, above the services; the router (`app`) builds it.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::keyadmin::KeyAdmin;
use crate::ledger::Ledger;
use crate::store::Store;
use crate::useradmin::UserAdmin;

pub struct AppInner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub ledger: Arc<Ledger>,
    pub gateway: Arc<Gateway>,
    pub keys: KeyAdmin,
    pub users: UserAdmin,
    pub auth: Arc<Authenticator>,
    /// Key holders signed in to `/me`: each session stands for one key id.
    pub holders: crate::auth::Sessions<i64>,
    /// Invite redemptions per client address.
    pub redemptions: crate::invites::RedeemLimiter,
}

#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
