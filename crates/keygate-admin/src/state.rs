//! What every handler shares.

use std::sync::Arc;
use std::time::SystemTime;

use keygate::audit::AuditTrail;
use keygate::{Admin, KeyRecord};
use keygate_axum::Identity;

use crate::views::KeyView;

/// The admin handle and the audit trail the handlers use.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) admin: Admin,
    pub(crate) trail: Option<Arc<dyn AuditTrail>>,
}

impl ApiState {
    /// The admin handle for a change by `caller`: its audit events name the caller's key id.
    pub(crate) fn acting(&self, caller: &Identity) -> Admin {
        self.admin.clone().actor(caller.key_id().as_str())
    }

    /// `record` as the API shows it at `now`, its environment named by the admin handle's
    /// keyring.
    pub(crate) fn key_view(&self, record: &KeyRecord, now: SystemTime) -> KeyView {
        KeyView::new(record, now, self.admin.keyring())
    }

    /// `records` as the API shows them now.
    pub(crate) fn key_views(&self, records: &[KeyRecord]) -> Vec<KeyView> {
        let now = self.admin.clock().now();
        records.iter().map(|r| self.key_view(r, now)).collect()
    }
}
