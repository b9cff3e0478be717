//! The key lifecycle against a reference model (checklist items 34 and 35).
//!
//! proptest generates sequences of operations — create (with or without an expiry), mint without
//! storing and store later, create with a used id, disable, enable, revoke, rotate (with a grace
//! period, zero, or above the cap), set expiry, delete, advance the clock, authenticate with the
//! real or a mutated secret, list by state — and runs each one on the real [`Verifier`] and its
//! [`Admin`] (the path services and the CLI use, so the verifier's positive and negative caches and
//! their invalidation are in the loop) and on a small in-memory model of what each should do. Every
//! outcome must match the model exactly: allowed (as the right key), or the exact refusal reason,
//! or the exact management error. Independently of the model, a key once revoked or deleted never
//! authenticates again, and every id a store hands out is new. At the end of each sequence every
//! key is checked again, through the same verifier and through a fresh one (empty cache), its
//! stored record is compared with the model, and so is the list of keys in each state.
//!
//! Runs on MemoryStore, SQLite (a temp file) and PostgreSQL (a schema of its own, when
//! `KEYGATE_TEST_POSTGRES_URL` is set; set but unreachable fails). The SQL stores keep one
//! database for all the sequences of a run: ids are random, so sequences never share a key.
//! `PROPTEST_CASES` overrides the number of sequences per store.
//!
//! A failure prints the shrunk sequence. Keys are numbered in the order the sequence made them,
//! from 1; `Pick(n)` names key `1 + n % (keys so far)`, or key 0, an id that is never stored,
//! while there is none.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Uri};
use keygate::clock::{Clock, ManualClock};
use keygate::key::SECRET_LEN;
use keygate::record::{ChangeRefused, InvalidInput, MAX_ROTATION_GRACE};
use keygate::{
    Admin, HttpRequestView, KeyAdmin, KeyFilter, KeyId, KeyRecord, KeyState, MintedKey, NewKey,
    PageRequest, Reason, StoreError, Verifier,
};
use keygate_tests::stores::{self, TestStore};
use keygate_tests::{PREFIX, forge, keyring};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Longest generated sequence.
const MAX_OPS: usize = 40;

/// A position in the list of keys a sequence has made (modulo its length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pick(usize);

/// Which secret an authentication presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Secret {
    /// The key as created.
    Real,
    /// The key's id with one secret character changed (checksum fixed up).
    Mutated,
}

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Op {
    /// `Admin::create_key`, expiring this long from now (zero: refused, expiry in the past).
    Create {
        expires_in: Option<Duration>,
    },
    /// Mints a key with the keyring without storing it: its id is unknown until stored.
    Mint {
        expires_in: Option<Duration>,
    },
    /// Stores a key minted earlier (`Admin::create`): a guess of its id may be in the negative
    /// cache.
    StoreMinted(Pick),
    /// Creates a new key claiming the id of a stored or deleted key: refused, ids are never
    /// reused.
    Reuse(Pick),
    Disable(Pick),
    Enable(Pick),
    Revoke(Pick),
    Delete(Pick),
    /// `Admin::rotate` with this grace.
    Rotate(Pick, Duration),
    /// Sets the expiry this long from now, or clears it.
    SetExpiry(Pick, Option<Duration>),
    Advance(Duration),
    Auth(Pick, Secret),
    /// Lists the sequence's keys, all or those in one state (the SQL stores decide states in
    /// SQL, apart from `KeyRecord::state`).
    List(Option<KeyState>),
}

/// What an operation came to, on the model or on the implementation.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// A management operation succeeded (or the clock moved).
    Done,
    /// The operation had nothing to act on (no minted key waiting to be stored).
    Skipped,
    /// The key authenticated.
    Allowed,
    /// The key was refused for this reason.
    Denied(Reason),
    /// `StoreError::NotFound` naming the key.
    NotFound,
    /// `StoreError::Conflict` naming the key, with this reason.
    Conflict(&'static str),
    /// `StoreError::InvalidInput`.
    Invalid(InvalidInput),
    /// The ids `list` returned, in its order.
    Listed(Vec<KeyId>),
    /// Anything else (a store failure, an error naming another key): never expected.
    Other(String),
}

fn conflict(refused: ChangeRefused) -> Outcome {
    Outcome::Conflict(refused.reason())
}

/// Where a key stands in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// Minted, never to be stored (key 0 of every sequence).
    Never,
    /// Minted, waiting for `StoreMinted`.
    Pending,
    Live,
    Deleted,
}

/// The model of one key.
#[derive(Debug)]
struct ModelKey {
    id: KeyId,
    key: String,
    mutated: String,
    stored: Stored,
    revoked_at: Option<SystemTime>,
    disabled_at: Option<SystemTime>,
    expires_at: Option<SystemTime>,
    updated_at: SystemTime,
    /// Set once the implementation confirmed a revoke or delete: the key must never
    /// authenticate again, whatever the model says.
    dead: bool,
}

impl ModelKey {
    /// A key minted at `at`.
    fn new(
        id: KeyId,
        key: String,
        stored: Stored,
        expires_at: Option<SystemTime>,
        at: SystemTime,
    ) -> Self {
        let mutated = mutate(&key);
        Self {
            id,
            key,
            mutated,
            stored,
            revoked_at: None,
            disabled_at: None,
            expires_at,
            updated_at: at,
            dead: false,
        }
    }

    /// The key's state at `now`, `None` when the store does not hold it. Revoked outranks
    /// disabled, which outranks expired; expiry is inclusive (`expires_at <= now`).
    fn state(&self, now: SystemTime) -> Option<KeyState> {
        if self.stored != Stored::Live {
            None
        } else if self.revoked_at.is_some() {
            Some(KeyState::Revoked)
        } else if self.disabled_at.is_some() {
            Some(KeyState::Disabled)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(KeyState::Expired)
        } else {
            Some(KeyState::Active)
        }
    }

    /// What authenticating with `secret` must give at `now`. The secret is checked before the
    /// state, so a wrong secret says nothing about the key's state.
    fn expected_auth(&self, secret: Secret, now: SystemTime) -> Outcome {
        match (self.state(now), secret) {
            (None, _) => Outcome::Denied(Reason::UnknownKey),
            (Some(_), Secret::Mutated) => Outcome::Denied(Reason::WrongSecret),
            (Some(KeyState::Active), Secret::Real) => Outcome::Allowed,
            (Some(KeyState::Revoked), Secret::Real) => Outcome::Denied(Reason::Revoked),
            (Some(KeyState::Disabled), Secret::Real) => Outcome::Denied(Reason::Disabled),
            (Some(KeyState::Expired), Secret::Real) => Outcome::Denied(Reason::Expired),
        }
    }
}

/// `key` with the first secret character changed and the checksum recomputed: well-formed, the
/// same id, the wrong secret.
fn mutate(key: &str) -> String {
    let id_start = PREFIX.len() + 1;
    let secret_start = id_start + KeyId::LEN + 1;
    let id = &key[id_start..id_start + KeyId::LEN];
    let mut secret = key[secret_start..key.len() - 6].to_owned();
    let first = if secret.starts_with('A') { "B" } else { "A" };
    secret.replace_range(0..1, first);
    forge(PREFIX, id, &secret)
}

fn outcome_of<T>(target: KeyId, result: Result<T, StoreError>) -> (Outcome, Option<T>) {
    match result {
        Ok(value) => (Outcome::Done, Some(value)),
        Err(StoreError::NotFound(id)) if id == target => (Outcome::NotFound, None),
        Err(StoreError::Conflict { id, reason }) if id == target => {
            (Outcome::Conflict(reason), None)
        }
        Err(StoreError::InvalidInput(invalid)) => (Outcome::Invalid(invalid), None),
        Err(other) => (Outcome::Other(format!("{other:?}")), None),
    }
}

/// How the verifier under test caches.
#[derive(Clone, Copy, Debug)]
enum Tuning {
    /// The defaults: records stay cached for the whole sequence, changes evict them.
    Default,
    /// Tiny caches whose records are never fresh, with stale-if-error on: every cache hit goes
    /// through the refresh path (one reader, generation checks, a store read, reinsertion).
    Churn,
}

/// The verifier the sequences drive: the test keyring, the store's clock, and no failed-attempt
/// limiter (the model counts no failures; `rate_limits.rs` covers the limiter).
fn verifier<S: TestStore>(store: &S, clock: &ManualClock, tuning: Tuning) -> Verifier {
    let builder = Verifier::builder(keyring(), store.clone())
        .clock(clock.clone())
        .failure_limit(None);
    match tuning {
        Tuning::Default => builder,
        Tuning::Churn => builder
            .cache_capacity(4)
            .negative_cache_capacity(4)
            .cache_ttl(Duration::ZERO)
            .stale_if_error(Duration::from_secs(60)),
    }
    .build()
}

async fn authenticate(verifier: &Verifier, key: &str, id: KeyId) -> Outcome {
    let mut headers = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(key) else {
        return Outcome::Other("key is not a header value".to_owned());
    };
    headers.insert("x-api-key", value);
    let uri = Uri::from_static("/");
    match verifier
        .verify_request(&HttpRequestView::new(&headers, &uri, None))
        .await
    {
        Ok(identity) if identity.key_id() == id => Outcome::Allowed,
        Ok(identity) => Outcome::Other(format!("allowed as another key, {}", identity.key_id())),
        Err(rejection) => Outcome::Denied(rejection.reason()),
    }
}

/// One sequence in progress: the implementation, the model, and what happened so far.
struct Run<'a> {
    store_name: &'static str,
    tuning: Tuning,
    /// The owner of this sequence's keys (rotation copies it), so listing by owner finds
    /// exactly them in a store other sequences share.
    owner: String,
    verifier: Verifier,
    admin: Admin,
    clock: ManualClock,
    /// The model's clock (the implementation's moves with it).
    now: SystemTime,
    keys: Vec<ModelKey>,
    /// Minted keys waiting to be stored, by position in `keys`.
    pending: Vec<(usize, MintedKey)>,
    /// Every id any sequence on this store has seen: a new key's id must not be among them.
    seen: &'a Mutex<HashSet<KeyId>>,
    trace: Vec<Outcome>,
}

impl<'a> Run<'a> {
    fn new<S: TestStore>(
        store_name: &'static str,
        tuning: Tuning,
        store: &S,
        clock: &ManualClock,
        seen: &'a Mutex<HashSet<KeyId>>,
    ) -> Result<Self, String> {
        let verifier = verifier(store, clock, tuning);
        let admin = verifier.admin();
        static SEQUENCES: AtomicU64 = AtomicU64::new(0);
        let mut run = Self {
            store_name,
            tuning,
            owner: format!("model-{}", SEQUENCES.fetch_add(1, Ordering::Relaxed)),
            verifier,
            admin,
            clock: clock.clone(),
            now: clock.now(),
            keys: Vec::new(),
            pending: Vec::new(),
            seen,
            trace: Vec::new(),
        };
        // Key 0: well-formed, the right prefix, never stored.
        let minted = run.mint(None)?;
        let record = minted.record().clone();
        let ghost = minted.into_created(record);
        let key = ghost.key.expose_secret().to_owned();
        run.keys.push(ModelKey::new(
            ghost.record.id,
            key,
            Stored::Never,
            None,
            run.now,
        ));
        Ok(run)
    }

    fn fail(&self, step: usize, op: &Op, detail: impl std::fmt::Display) -> String {
        format!("{}: op #{step} {op:?}: {detail}", self.store_name)
    }

    /// Key 0 (never stored) only while there is no other: unknown ids come up anyway, from
    /// minted keys not yet stored and from deleted ones.
    fn pick(&self, pick: Pick) -> usize {
        match self.keys.len() {
            0 | 1 => 0,
            n => 1 + pick.0 % (n - 1),
        }
    }

    fn mint(&self, expires_in: Option<Duration>) -> Result<MintedKey, String> {
        let mut spec = NewKey::new("model").owner(&self.owner);
        if let Some(after) = expires_in {
            spec = spec.expires_at(self.now + after);
        }
        keyring()
            .mint_at(spec, self.now)
            .map_err(|e| format!("mint: {e}"))
    }

    /// Records `id` as handed out; an id seen before is a reused id.
    fn fresh(&self, id: KeyId) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.insert(id) {
            Ok(())
        } else {
            Err(format!("id {id} handed out twice"))
        }
    }

    /// The stored keys in `state` (all with `None`), in id order.
    fn expected_list(&self, state: Option<KeyState>) -> Outcome {
        let mut ids: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|k| {
                k.state(self.now)
                    .is_some_and(|s| state.is_none_or(|want| s == want))
            })
            .map(|k| k.id)
            .collect();
        ids.sort();
        Outcome::Listed(ids)
    }

    async fn list(&self, state: Option<KeyState>) -> Outcome {
        let mut filter = KeyFilter::default().owner(self.owner.clone());
        filter.state = state;
        match self.admin.list(&filter, PageRequest::first(1000)).await {
            Ok(page) if page.next.is_none() => {
                Outcome::Listed(page.keys.iter().map(|r| r.id).collect())
            }
            Ok(page) => Outcome::Other(format!("a second page after {:?}", page.next)),
            Err(error) => Outcome::Other(format!("{error:?}")),
        }
    }

    /// A stored record must agree with the model's key.
    fn check_record(&self, at: usize, record: &KeyRecord) -> Result<(), String> {
        let model = &self.keys[at];
        if record.id != model.id {
            return Err(format!("record of {} for key {}", record.id, model.id));
        }
        let state = model.state(self.now);
        let times = |expires, disabled, revoked, updated| {
            format!(
                "expires {expires:?}, disabled {disabled:?}, revoked {revoked:?}, \
                 updated {updated:?}"
            )
        };
        let got = times(
            record.expires_at,
            record.disabled_at,
            record.revoked_at,
            record.updated_at,
        );
        let want = times(
            model.expires_at,
            model.disabled_at,
            model.revoked_at,
            model.updated_at,
        );
        if Some(record.state(self.now)) != state || got != want {
            return Err(format!(
                "record of key {at}: state {:?}, {got}; model: {state:?}, {want}",
                record.state(self.now),
            ));
        }
        Ok(())
    }

    /// Runs one operation on both sides and compares.
    async fn step(&mut self, step: usize, op: &Op) -> Result<(), String> {
        let (expected, real) = match *op {
            Op::Create { expires_in } => self.create(expires_in).await,
            Op::Mint { expires_in } => {
                if expires_in.is_some_and(|d| d.is_zero()) {
                    (Outcome::Skipped, Ok(Outcome::Skipped))
                } else {
                    let minted = self.mint(expires_in)?;
                    let id = minted.record().id;
                    // The plaintext exists only once the key is stored: until then present
                    // its id with some secret (a guess of the id, as an attacker's would be).
                    let guess = forge(PREFIX, id.as_str(), &"A".repeat(SECRET_LEN));
                    let model = ModelKey::new(
                        id,
                        guess,
                        Stored::Pending,
                        minted.record().expires_at,
                        self.now,
                    );
                    self.pending.push((self.keys.len(), minted));
                    self.keys.push(model);
                    (Outcome::Done, Ok(Outcome::Done))
                }
            }
            Op::StoreMinted(pick) => self.store_minted(pick).await,
            Op::Reuse(pick) => self.reuse(pick).await,
            Op::Disable(pick) => self.disable_or_enable(pick, true).await,
            Op::Enable(pick) => self.disable_or_enable(pick, false).await,
            Op::Revoke(pick) => self.revoke(pick).await,
            Op::Delete(pick) => self.delete(pick).await,
            Op::Rotate(pick, grace) => self.rotate(pick, grace).await,
            Op::SetExpiry(pick, after) => self.set_expiry(pick, after).await,
            Op::Advance(by) => {
                self.clock.advance(by);
                self.now += by;
                (Outcome::Done, Ok(Outcome::Done))
            }
            Op::List(state) => (self.expected_list(state), Ok(self.list(state).await)),
            Op::Auth(pick, secret) => {
                let at = self.pick(pick);
                let model = &self.keys[at];
                let expected = model.expected_auth(secret, self.now);
                let presented = match secret {
                    Secret::Real => &model.key,
                    Secret::Mutated => &model.mutated,
                };
                let real = authenticate(&self.verifier, presented, model.id).await;
                if model.dead && real == Outcome::Allowed {
                    return Err(self.fail(step, op, "a revoked or deleted key authenticated"));
                }
                (expected, Ok(real))
            }
        };
        let real = real.map_err(|detail| self.fail(step, op, detail))?;
        if real != expected {
            return Err(self.fail(
                step,
                op,
                format!("the model expects {expected:?}, the implementation gave {real:?}"),
            ));
        }
        self.trace.push(real);
        Ok(())
    }

    async fn create(&mut self, expires_in: Option<Duration>) -> (Outcome, Result<Outcome, String>) {
        let mut spec = NewKey::new("model").owner(&self.owner);
        let expires_at = expires_in.map(|after| self.now + after);
        if let Some(at) = expires_at {
            spec = spec.expires_at(at);
        }
        let expected = if expires_in.is_some_and(|d| d.is_zero()) {
            Outcome::Invalid(InvalidInput::ExpiryInPast)
        } else {
            Outcome::Done
        };
        let result = self.admin.create_key(spec).await;
        let real = match result {
            Ok(created) => {
                let id = created.record.id;
                let key = created.key.expose_secret().to_owned();
                self.keys
                    .push(ModelKey::new(id, key, Stored::Live, expires_at, self.now));
                match self
                    .fresh(id)
                    .and_then(|()| self.check_record(self.keys.len() - 1, &created.record))
                {
                    Ok(()) => Ok(Outcome::Done),
                    Err(e) => Err(e),
                }
            }
            Err(StoreError::InvalidInput(invalid)) => Ok(Outcome::Invalid(invalid)),
            Err(other) => Ok(Outcome::Other(format!("{other:?}"))),
        };
        (expected, real)
    }

    async fn store_minted(&mut self, pick: Pick) -> (Outcome, Result<Outcome, String>) {
        if self.pending.is_empty() {
            return (Outcome::Skipped, Ok(Outcome::Skipped));
        }
        let (at, minted) = self.pending.remove(pick.0 % self.pending.len());
        let id = minted.record().id;
        let (real, created) = outcome_of(id, self.admin.create(minted).await);
        if let Some(created) = created {
            let model = &mut self.keys[at];
            model.stored = Stored::Live;
            model.key = created.key.expose_secret().to_owned();
            model.mutated = mutate(&model.key);
            if let Err(e) = self
                .fresh(id)
                .and_then(|()| self.check_record(at, &created.record))
            {
                return (Outcome::Done, Err(e));
            }
        }
        (Outcome::Done, Ok(real))
    }

    async fn reuse(&mut self, pick: Pick) -> (Outcome, Result<Outcome, String>) {
        let model = &self.keys[self.pick(pick)];
        let id = model.id;
        if !matches!(model.stored, Stored::Live | Stored::Deleted) {
            return (Outcome::Skipped, Ok(Outcome::Skipped));
        }
        let minted = match self.mint(None) {
            Ok(minted) => minted.testing_with_id(id),
            Err(e) => return (Outcome::Done, Err(e)),
        };
        let (real, _) = outcome_of(id, self.admin.create(minted).await);
        (
            Outcome::Conflict("a key with this id exists or existed"),
            Ok(real),
        )
    }

    async fn disable_or_enable(
        &mut self,
        pick: Pick,
        disable: bool,
    ) -> (Outcome, Result<Outcome, String>) {
        let at = self.pick(pick);
        let model = &mut self.keys[at];
        let id = model.id;
        let expected = if model.stored != Stored::Live {
            Outcome::NotFound
        } else if model.revoked_at.is_some() {
            conflict(ChangeRefused::Revoked)
        } else {
            // Disabling twice keeps the first time.
            if !disable {
                model.disabled_at = None;
            } else if model.disabled_at.is_none() {
                model.disabled_at = Some(self.now);
            }
            model.updated_at = self.now;
            Outcome::Done
        };
        let result = if disable {
            self.admin.disable(&id).await
        } else {
            self.admin.enable(&id).await
        };
        self.changed(at, expected, outcome_of(id, result))
    }

    async fn revoke(&mut self, pick: Pick) -> (Outcome, Result<Outcome, String>) {
        let at = self.pick(pick);
        let model = &mut self.keys[at];
        let id = model.id;
        let expected = if model.stored == Stored::Live {
            // Revoking twice keeps the first time.
            model.revoked_at.get_or_insert(self.now);
            model.updated_at = self.now;
            Outcome::Done
        } else {
            Outcome::NotFound
        };
        let (real, record) = outcome_of(id, self.admin.revoke(&id).await);
        if record.is_some() {
            self.keys[at].dead = true;
        }
        self.changed(at, expected, (real, record))
    }

    async fn set_expiry(
        &mut self,
        pick: Pick,
        after: Option<Duration>,
    ) -> (Outcome, Result<Outcome, String>) {
        let at = self.pick(pick);
        let expires_at = after.map(|after| self.now + after);
        let model = &mut self.keys[at];
        let id = model.id;
        let expected = if model.stored == Stored::Live {
            model.expires_at = expires_at;
            model.updated_at = self.now;
            Outcome::Done
        } else {
            Outcome::NotFound
        };
        let result = self.admin.set_expiry(&id, expires_at).await;
        self.changed(at, expected, outcome_of(id, result))
    }

    /// The outcome of a change that returns the updated record, which must match the model.
    fn changed(
        &self,
        at: usize,
        expected: Outcome,
        (real, record): (Outcome, Option<KeyRecord>),
    ) -> (Outcome, Result<Outcome, String>) {
        let real = match record {
            Some(record) => self.check_record(at, &record).map(|()| real),
            None => Ok(real),
        };
        (expected, real)
    }

    async fn delete(&mut self, pick: Pick) -> (Outcome, Result<Outcome, String>) {
        let at = self.pick(pick);
        let model = &mut self.keys[at];
        let id = model.id;
        let expected = if model.stored == Stored::Live {
            model.stored = Stored::Deleted;
            Outcome::Done
        } else {
            Outcome::NotFound
        };
        let (real, done) = outcome_of(id, self.admin.delete(&id).await);
        if done.is_some() {
            self.keys[at].dead = true;
        }
        (expected, Ok(real))
    }

    async fn rotate(&mut self, pick: Pick, grace: Duration) -> (Outcome, Result<Outcome, String>) {
        let at = self.pick(pick);
        let now = self.now;
        let model = &mut self.keys[at];
        let id = model.id;
        let expected = if grace > MAX_ROTATION_GRACE {
            Outcome::Invalid(InvalidInput::GraceTooLong)
        } else {
            match model.state(now) {
                None => Outcome::NotFound,
                Some(KeyState::Revoked) => conflict(ChangeRefused::Revoked),
                Some(KeyState::Disabled) => conflict(ChangeRefused::Disabled),
                Some(KeyState::Expired) => conflict(ChangeRefused::Expired),
                Some(KeyState::Active) => {
                    if grace.is_zero() {
                        model.revoked_at = Some(now);
                    } else {
                        let end = now + grace;
                        model.expires_at = Some(model.expires_at.map_or(end, |at| at.min(end)));
                    }
                    model.updated_at = now;
                    Outcome::Done
                }
            }
        };
        let (real, rotated) = outcome_of(id, self.admin.rotate(&id, grace).await);
        let Some(rotated) = rotated else {
            return (expected, Ok(real));
        };
        if grace.is_zero() {
            self.keys[at].dead = true;
        }
        let new = &rotated.new.record;
        let new_id = new.id;
        let key = rotated.new.key.expose_secret().to_owned();
        self.keys
            .push(ModelKey::new(new_id, key, Stored::Live, None, now));
        let checked = self
            .check_record(at, &rotated.old)
            .and_then(|()| self.fresh(new_id))
            .and_then(|()| self.check_record(self.keys.len() - 1, new))
            .and_then(|()| {
                if new.rotated_from == Some(id) && new.name == rotated.old.name {
                    Ok(real)
                } else {
                    Err(format!(
                        "successor {new_id}: rotated_from {:?}, name {:?}",
                        new.rotated_from, new.name
                    ))
                }
            });
        (expected, checked)
    }

    /// Every key again, through this verifier (warm cache) and a fresh one (cold), and every
    /// stored record against the model.
    async fn sweep<S: TestStore>(&self, store: &S) -> Result<(), String> {
        let cold = verifier(store, &self.clock, self.tuning);
        for (at, model) in self.keys.iter().enumerate() {
            for secret in [Secret::Real, Secret::Mutated] {
                let expected = model.expected_auth(secret, self.now);
                let presented = match secret {
                    Secret::Real => &model.key,
                    Secret::Mutated => &model.mutated,
                };
                for (which, verifier) in [("warm", &self.verifier), ("cold", &cold)] {
                    let real = authenticate(verifier, presented, model.id).await;
                    if real != expected || (model.dead && real == Outcome::Allowed) {
                        return Err(format!(
                            "{}: final check of key {at} ({secret:?}, {which} verifier): model \
                             expects {expected:?}, the implementation gave {real:?}",
                            self.store_name
                        ));
                    }
                }
            }
            let (got, record) = outcome_of(model.id, self.admin.get(&model.id).await);
            match record {
                Some(record) => self.check_record(at, &record),
                None if model.stored != Stored::Live && got == Outcome::NotFound => Ok(()),
                None => Err(format!("get of key {at} ({:?}): {got:?}", model.stored)),
            }
            .map_err(|e| format!("{}: final check: {e}", self.store_name))?;
        }
        for state in STATES {
            let (expected, real) = (self.expected_list(state), self.list(state).await);
            if real != expected {
                return Err(format!(
                    "{}: final list of {state:?}: model expects {expected:?}, the \
                     implementation gave {real:?}",
                    self.store_name
                ));
            }
        }
        Ok(())
    }
}

/// Runs `ops` on `store` and the model; the outcomes in order, or what differed.
async fn run_sequence<S: TestStore>(
    store_name: &'static str,
    tuning: Tuning,
    store: &S,
    clock: &ManualClock,
    seen: &Mutex<HashSet<KeyId>>,
    ops: &[Op],
) -> Result<Vec<Outcome>, String> {
    let mut run = Run::new(store_name, tuning, store, clock, seen)?;
    for (step, op) in ops.iter().enumerate() {
        run.step(step, op).await?;
    }
    run.sweep(store).await?;
    Ok(run.trace)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Time spans for expiries and clock moves: edges (1 ms, 999 ms, whole units) and anything up
/// to about a day, in milliseconds (which every store keeps exactly).
fn span() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(ms(1)),
        Just(ms(999)),
        Just(secs(1)),
        Just(secs(60)),
        Just(secs(3600)),
        Just(secs(86_400)),
        (1_u64..=90_000_000).prop_map(ms),
    ]
}

/// An expiry for a new key: mostly none; sometimes zero (refused as in the past).
fn new_expiry() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        4 => span().prop_map(Some),
    ]
}

fn grace() -> impl Strategy<Value = Duration> {
    let cap = u64::try_from(MAX_ROTATION_GRACE.as_millis()).unwrap_or(u64::MAX);
    // About one rotation in eight asks for more than the cap.
    prop_oneof![
        3 => Just(Duration::ZERO),
        2 => Just(secs(1)),
        2 => Just(secs(3600)),
        2 => Just(MAX_ROTATION_GRACE),
        1 => Just(MAX_ROTATION_GRACE + ms(1)),
        1 => Just(MAX_ROTATION_GRACE + secs(1)),
        6 => span(),
        4 => (1..=cap).prop_map(ms),
        1 => (cap + 1..=2 * cap).prop_map(ms),
    ]
}

fn advance() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => span(),
        1 => Just(MAX_ROTATION_GRACE),
        1 => Just(MAX_ROTATION_GRACE + secs(1)),
    ]
}

/// Every state filter `list` takes.
const STATES: [Option<KeyState>; 5] = [
    None,
    Some(KeyState::Active),
    Some(KeyState::Disabled),
    Some(KeyState::Revoked),
    Some(KeyState::Expired),
];

fn pick() -> impl Strategy<Value = Pick> {
    (0_usize..64).prop_map(Pick)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => new_expiry().prop_map(|expires_in| Op::Create { expires_in }),
        1 => new_expiry().prop_map(|expires_in| Op::Mint { expires_in }),
        1 => pick().prop_map(Op::StoreMinted),
        1 => pick().prop_map(Op::Reuse),
        2 => pick().prop_map(Op::Disable),
        2 => pick().prop_map(Op::Enable),
        2 => pick().prop_map(Op::Revoke),
        1 => pick().prop_map(Op::Delete),
        3 => (pick(), grace()).prop_map(|(p, g)| Op::Rotate(p, g)),
        1 => (pick(), proptest::option::weighted(0.8, span()))
            .prop_map(|(p, e)| Op::SetExpiry(p, e)),
        3 => advance().prop_map(Op::Advance),
        1 => proptest::sample::select(&STATES[..]).prop_map(Op::List),
        8 => (pick(), prop_oneof![3 => Just(Secret::Real), 1 => Just(Secret::Mutated)])
            .prop_map(|(p, s)| Op::Auth(p, s)),
    ]
}

fn sequences() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=MAX_OPS)
}

/// Runs `cases` generated sequences (or `PROPTEST_CASES`) against one store, each with a fresh
/// verifier, and panics with the shrunk failing sequence.
fn check_store<S: TestStore>(
    runtime: &tokio::runtime::Runtime,
    store_name: &'static str,
    tuning: Tuning,
    store: &S,
    clock: &ManualClock,
    cases: u32,
) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = Mutex::new(HashSet::new());
    let result = runner.run(&sequences(), |ops| {
        runtime
            .block_on(run_sequence(store_name, tuning, store, clock, &seen, &ops))
            .map(drop)
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!(
                "{store_name}: implementation and model differ: {reason}\nshrunk sequence: {ops:#?}"
            )
        }
        Err(error) => panic!("{store_name}: {error}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn memory_matches_the_model() {
    let runtime = runtime();
    // A fresh store for every sequence would hide nothing the shared one shows; share it like
    // the SQL stores, and let the sequences' random ids keep them apart.
    let fixture = stores::memory();
    check_store(
        &runtime,
        "memory",
        Tuning::Default,
        &fixture.store,
        &fixture.clock,
        256,
    );
}

#[test]
fn memory_with_a_churning_cache_matches_the_model() {
    let runtime = runtime();
    let fixture = stores::memory();
    let (store, clock) = (&fixture.store, &fixture.clock);
    check_store(&runtime, "memory, churn", Tuning::Churn, store, clock, 128);
}

#[test]
fn sqlite_matches_the_model() {
    let runtime = runtime();
    let fixture = runtime.block_on(stores::sqlite());
    let (store, clock) = (&fixture.store, &fixture.clock);
    check_store(&runtime, "sqlite", Tuning::Default, store, clock, 64);
}

#[test]
fn postgres_matches_the_model() {
    let runtime = runtime();
    let Some(fixture) = runtime.block_on(stores::postgres()) else {
        return;
    };
    let (store, clock) = (&fixture.store, &fixture.clock);
    check_store(&runtime, "postgres", Tuning::Default, store, clock, 32);
}

/// Item 35 and expiry, step by step on every store: the outcomes are spelled out here, not
/// only derived from the model (which must agree too).
async fn rotation_and_expiry<S: TestStore>(
    store_name: &'static str,
    store: &S,
    clock: &ManualClock,
) {
    use InvalidInput::{ExpiryInPast, GraceTooLong};
    use Op::{Advance, Auth, Create, Rotate};
    use Outcome::{Allowed, Denied, Done, Invalid};
    use Secret::Real;
    // Key `n` of the sequence (numbered from 1, in the order made).
    let key = |n: usize| Pick(n - 1);
    let hour = secs(3600);
    let (none, in_60s, zero) = (None, Some(secs(60)), Some(Duration::ZERO));
    let ops_and_outcomes = [
        // Key 1, cached by its first use.
        (Create { expires_in: none }, Done),
        (Auth(key(1), Real), Allowed),
        // Key 2 replaces it with an hour's grace: the new key works at once, the old one too.
        (Rotate(key(1), hour), Done),
        (Auth(key(2), Real), Allowed),
        (Auth(key(1), Real), Allowed),
        // At grace - 1 s the old key works; at grace + 1 s it has expired.
        (Advance(hour - secs(1)), Done),
        (Auth(key(1), Real), Allowed),
        (Advance(secs(2)), Done),
        (Auth(key(1), Real), Denied(Reason::Expired)),
        (Auth(key(2), Real), Allowed),
        // An expired key does not rotate.
        (Rotate(key(1), hour), conflict(ChangeRefused::Expired)),
        // Key 3 replaces key 2 with no grace: key 2 is revoked at once, and stays so.
        (Rotate(key(2), Duration::ZERO), Done),
        (Auth(key(2), Real), Denied(Reason::Revoked)),
        (Auth(key(3), Real), Allowed),
        (Rotate(key(2), hour), conflict(ChangeRefused::Revoked)),
        // Above the cap is refused, by a second or a millisecond, and changes nothing.
        (
            Rotate(key(3), MAX_ROTATION_GRACE + secs(1)),
            Invalid(GraceTooLong),
        ),
        (
            Rotate(key(3), MAX_ROTATION_GRACE + ms(1)),
            Invalid(GraceTooLong),
        ),
        (Auth(key(3), Real), Allowed),
        // The cap itself is allowed (key 4), with the same edges.
        (Rotate(key(3), MAX_ROTATION_GRACE), Done),
        (Advance(MAX_ROTATION_GRACE - secs(1)), Done),
        (Auth(key(3), Real), Allowed),
        (Advance(secs(2)), Done),
        (Auth(key(3), Real), Denied(Reason::Expired)),
        (Auth(key(4), Real), Allowed),
        // Key 5 expires in 60 s: it works 1 ms before, and not at the instant (inclusive).
        (Create { expires_in: in_60s }, Done),
        (Auth(key(5), Real), Allowed),
        (Advance(secs(60) - ms(1)), Done),
        (Auth(key(5), Real), Allowed),
        (Advance(ms(1)), Done),
        (Auth(key(5), Real), Denied(Reason::Expired)),
        // An expiry that is not in the future is refused.
        (Create { expires_in: zero }, Invalid(ExpiryInPast)),
    ];
    let ops: Vec<Op> = ops_and_outcomes.iter().map(|(op, _)| op.clone()).collect();
    let seen = Mutex::new(HashSet::new());
    let trace = run_sequence(store_name, Tuning::Default, store, clock, &seen, &ops)
        .await
        .unwrap();
    for ((op, expected), got) in ops_and_outcomes.iter().zip(&trace) {
        assert_eq!(got, expected, "{store_name}: {op:?}");
    }
    assert_eq!(trace.len(), ops.len(), "{store_name}");
}

#[tokio::test]
async fn rotation_grace_and_expiry_memory() {
    let fixture = stores::memory();
    rotation_and_expiry("memory", &fixture.store, &fixture.clock).await;
}

#[tokio::test]
async fn rotation_grace_and_expiry_sqlite() {
    let fixture = stores::sqlite().await;
    rotation_and_expiry("sqlite", &fixture.store, &fixture.clock).await;
}

#[tokio::test]
async fn rotation_grace_and_expiry_postgres() {
    if let Some(fixture) = stores::postgres().await {
        rotation_and_expiry("postgres", &fixture.store, &fixture.clock).await;
    }
}
