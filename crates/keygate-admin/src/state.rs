//! What every handler shares.

use std::sync::Arc;

use keygate::Admin;
use keygate::audit::AuditTrail;

/// The admin handle and the audit trail the handlers use.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) admin: Admin,
    pub(crate) trail: Option<Arc<dyn AuditTrail>>,
}
