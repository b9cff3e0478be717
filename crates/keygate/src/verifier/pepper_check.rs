//! The start-up check of the verifier's peppers against the store's settings: run by
//! [`VerifierBuilder::start`](super::VerifierBuilder::start), or else before the first store
//! read or key creation.

use std::sync::OnceLock;

use super::Inner;
use crate::store::{SettingsError, StoreError, check_peppers};

/// The outcome of the check, once known. A store that could not answer is not an outcome:
/// the next read tries again. A refusal stands for the verifier's life (its peppers do not
/// change).
#[derive(Default)]
pub(crate) struct PepperGate {
    outcome: OnceLock<Result<(), SettingsError>>,
}

impl PepperGate {
    /// Passes once the peppers matched; otherwise checks (again, after a store failure). Costs
    /// one atomic load once passed. A refusal is a [`StoreError::Unavailable`] (503 on the
    /// request path, never 401) carrying the [`SettingsError`].
    pub(crate) async fn ensure(&self, inner: &Inner) -> Result<(), StoreError> {
        if let Some(Ok(())) = self.outcome.get() {
            return Ok(());
        }
        self.check(inner).await.map_err(|error| match error {
            SettingsError::Store(error) => error,
            refused => StoreError::unavailable(refused),
        })
    }

    /// Runs the check now (unless it already passed or refused), and keeps its outcome.
    pub(crate) async fn check(&self, inner: &Inner) -> Result<(), SettingsError> {
        if let Some(outcome) = self.outcome.get() {
            return outcome.as_ref().map_err(SettingsError::copy).copied();
        }
        match check_peppers(&*inner.store, &*inner.admin, inner.keyring.peppers()).await {
            Ok(_) => {
                let _ = self.outcome.set(Ok(()));
                Ok(())
            }
            Err(SettingsError::Store(error)) => Err(SettingsError::Store(error)),
            Err(refused) => {
                tracing::error!(target: "keygate", error = %refused, "the verifier's peppers do not match the key store: key lookups are refused (503)");
                let _ = self.outcome.set(Err(refused.copy()));
                Err(refused)
            }
        }
    }
}

impl std::fmt::Debug for PepperGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PepperGate")
            .field("passed", &self.outcome.get().map(Result::is_ok))
            .finish()
    }
}
