//! The start-up check of the verifier's keyring against the store's settings: its peppers and
//! key prefix, by [`VerifierBuilder::start`](super::VerifierBuilder::start); else its peppers
//! only, before the first store read or key creation.

use std::sync::OnceLock;

use super::Inner;
use crate::keyring::Keyring;
use crate::store::{KeyAdmin, KeyStore, SettingsError, StoreError, check_keyring, check_peppers};

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
        self.ensure_for(&*inner.store, &*inner.admin, &inner.keyring)
            .await
    }

    /// [`PepperGate::ensure`] for a keyring and store held elsewhere (a standalone
    /// [`Admin`](super::Admin)).
    pub(crate) async fn ensure_for(
        &self,
        store: &dyn KeyStore,
        admin: &dyn KeyAdmin,
        keyring: &Keyring,
    ) -> Result<(), StoreError> {
        if let Some(Ok(())) = self.outcome.get() {
            return Ok(());
        }
        self.run(store, admin, keyring, false)
            .await
            .map_err(|error| match error {
                SettingsError::Store(error) => error,
                refused => StoreError::unavailable(refused),
            })
    }

    /// The check of [`VerifierBuilder::start`](super::VerifierBuilder::start): the peppers and
    /// the key prefix, recording both on first use. Runs even if the peppers already passed
    /// (the prefix is checked only here).
    pub(crate) async fn start(&self, inner: &Inner) -> Result<(), SettingsError> {
        self.run(&*inner.store, &*inner.admin, &inner.keyring, true)
            .await
    }

    async fn run(
        &self,
        store: &dyn KeyStore,
        admin: &dyn KeyAdmin,
        keyring: &Keyring,
        with_prefix: bool,
    ) -> Result<(), SettingsError> {
        match self.outcome.get() {
            Some(Err(refused)) => return Err(refused.copy()),
            Some(Ok(())) if !with_prefix => return Ok(()),
            _ => {}
        }
        let checked = if with_prefix {
            check_keyring(store, admin, keyring).await
        } else {
            check_peppers(store, admin, keyring.peppers()).await
        };
        match checked {
            Ok(_) => {
                let _ = self.outcome.set(Ok(()));
                Ok(())
            }
            Err(SettingsError::Store(error)) => Err(SettingsError::Store(error)),
            Err(refused) => {
                if with_prefix {
                    tracing::error!(target: "keygate", error = %refused, "the verifier's keyring does not match the key store's settings: not started");
                } else {
                    tracing::error!(target: "keygate", error = %refused, "the verifier's peppers do not match the key store: key lookups are refused (503)");
                }
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
