//! [`InProcessMeter`]: quota counters in one process, optionally persisted write-behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{
    CounterState, MAX_LINES, MeterError, QuotaDecision, QuotaLedger, QuotaLine, QuotaMeter,
    QuotaSubject, QuotaUsage,
};

/// How often an [`InProcessMeter`] with a ledger saves changed counters, unless set: a crash
/// loses at most the charges of this long (plus one save in flight).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Counts quota spending in process: exact for one instance, decided without awaiting once a
/// subject's counter is in memory.
///
/// With a [`QuotaLedger`] (a key store's counter table), a subject's counter is read from the
/// ledger on its first charge, and changed counters are saved every flush interval
/// ([`DEFAULT_FLUSH_INTERVAL`]) by a task on the Tokio runtime the meter was built on. **A
/// crash (or `SIGKILL`) loses at most the charges made since the last save: one flush
/// interval's worth, plus a save in flight.** Call [`InProcessMeter::flush`] on graceful
/// shutdown to lose nothing. A failed save keeps the counters pending and is retried at the
/// next interval; failures are counted ([`MeterStats::flush_failures`]). Saves never overlap:
/// a counter saved is never overwritten by an older one. The lost charges are in the
/// customer's favour (counts after a restart are lower than what was granted, never higher).
/// The bound is tested by killing a process mid-stream (`tests/tests/quota_crash.rs`); the
/// deployment guide's "Durability and many instances" compares it with the Redis meter.
///
/// Several instances each keeping their own counters would each grant the whole quota: use a
/// shared meter (`keygate_redis::RedisQuotaMeter`) when a service runs on more than one
/// instance.
#[derive(Clone, Default)]
pub struct InProcessMeter {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    counters: Mutex<Counters>,
    ledger: Option<Arc<dyn QuotaLedger>>,
    /// Held for a whole save: two saves in flight at once (the flush task's and a call to
    /// [`InProcessMeter::flush`]) could land in the wrong order and leave an older counter
    /// saved over a newer one.
    saving: tokio::sync::Mutex<()>,
    flushes: AtomicU64,
    flush_failures: AtomicU64,
}

#[derive(Default)]
struct Counters {
    /// Subjects whose counter is known. foldhash (randomly seeded, as the verifier's cache and
    /// the limiter's maps): a charge looks its lines up twice, and std's SipHash cost several
    /// times more per lookup.
    states: HashMap<QuotaSubject, Slot, foldhash::fast::RandomState>,
    /// Subjects changed since the last save, each once (their slot's `dirty` flag says whether
    /// it is listed): a charge of an already changed counter adds nothing here.
    dirty: Vec<QuotaSubject>,
}

/// A subject's counter in memory.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// `None`: none saved yet.
    state: Option<CounterState>,
    /// Listed in [`Counters::dirty`].
    dirty: bool,
}

impl Slot {
    const EMPTY: Self = Self {
        state: None,
        dirty: false,
    };

    /// Sets the counter of `subject` (this slot's) and lists it in `dirty` unless it is.
    fn set(&mut self, subject: QuotaSubject, state: CounterState, dirty: &mut Vec<QuotaSubject>) {
        self.state = Some(state);
        if !self.dirty {
            self.dirty = true;
            dirty.push(subject);
        }
    }
}

impl Counters {
    /// The subject's counter, if it is in memory (`Some(None)`: known to have none saved).
    fn state(&self, subject: &QuotaSubject) -> Option<Option<CounterState>> {
        self.states.get(subject).map(|slot| slot.state)
    }

    /// Sets a subject's counter and lists it for the next save.
    fn set(&mut self, subject: QuotaSubject, state: CounterState) {
        let slot = self.states.entry(subject).or_insert(Slot::EMPTY);
        slot.set(subject, state, &mut self.dirty);
    }

    /// Lists a subject again for the next save (its save failed), unless it is listed.
    fn relist(&mut self, subject: QuotaSubject) {
        if let Some(slot) = self.states.get_mut(&subject)
            && !slot.dirty
        {
            slot.dirty = true;
            self.dirty.push(subject);
        }
    }
}

/// Counts of an in-process meter's persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeterStats {
    /// Successful saves.
    pub flushes: u64,
    /// Saves that failed (their counters stayed pending).
    pub flush_failures: u64,
    /// Counters changed and not saved yet.
    pub pending: u64,
}

/// Configures an [`InProcessMeter`].
#[derive(Default)]
#[must_use]
pub struct InProcessMeterBuilder {
    ledger: Option<Arc<dyn QuotaLedger>>,
    flush_interval: Option<Duration>,
}

impl std::fmt::Debug for InProcessMeterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessMeterBuilder")
            .field("persisted", &self.ledger.is_some())
            .field("flush_interval", &self.flush_interval)
            .finish()
    }
}

impl InProcessMeterBuilder {
    /// Persists counters to `ledger`, write-behind.
    pub fn ledger(mut self, ledger: Arc<dyn QuotaLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// How often changed counters are saved (default [`DEFAULT_FLUSH_INTERVAL`]): the most a
    /// crash may lose. At least 10 ms.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// The meter. With a ledger, the flush task is spawned on the current Tokio runtime (when
    /// there is none, nothing is saved until [`InProcessMeter::flush`] is called).
    #[must_use]
    pub fn build(self) -> InProcessMeter {
        let meter = InProcessMeter {
            inner: Arc::new(Inner {
                ledger: self.ledger,
                ..Inner::default()
            }),
        };
        if meter.inner.ledger.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let every = self.flush_interval.unwrap_or(DEFAULT_FLUSH_INTERVAL);
            runtime.spawn(flush_every(Arc::downgrade(&meter.inner), every));
        }
        meter
    }
}

async fn flush_every(meter: Weak<Inner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = meter.upgrade() else { return };
        // Errors are counted and logged in `flush`; the next tick retries.
        let _ = InProcessMeter { inner }.flush().await;
    }
}

impl InProcessMeter {
    /// A meter that keeps its counters in memory only (lost on restart).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a meter (a ledger to persist to, the flush interval).
    pub fn builder() -> InProcessMeterBuilder {
        InProcessMeterBuilder::default()
    }

    /// Saves every changed counter now. Call it on graceful shutdown.
    ///
    /// # Errors
    /// The ledger's error; the counters stay pending.
    pub async fn flush(&self) -> Result<(), crate::store::StoreError> {
        let Some(ledger) = &self.inner.ledger else {
            return Ok(());
        };
        let _saving = self.inner.saving.lock().await;
        let batch: Vec<(QuotaSubject, CounterState)> = {
            let mut counters = self.counters();
            let Counters { states, dirty } = &mut *counters;
            // Drained, not taken: the list keeps its capacity for the next interval's charges.
            dirty
                .drain(..)
                .filter_map(|subject| {
                    let slot = states.get_mut(&subject)?;
                    slot.dirty = false;
                    Some((subject, slot.state?))
                })
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        match ledger.save_counters(&batch).await {
            Ok(()) => {
                self.inner.flushes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                self.inner.flush_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "keygate", %error, counters = batch.len(), "quota counters could not be saved; retrying at the next flush");
                let mut counters = self.counters();
                for (subject, _) in batch {
                    counters.relist(subject);
                }
                Err(error)
            }
        }
    }

    /// Persistence counts.
    #[must_use]
    pub fn stats(&self) -> MeterStats {
        MeterStats {
            flushes: self.inner.flushes.load(Ordering::Relaxed),
            flush_failures: self.inner.flush_failures.load(Ordering::Relaxed),
            pending: self.counters().dirty.len() as u64,
        }
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave a counter half-written (each update is
        // one assignment), so a poisoned lock is still sound to use.
        self.inner
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Charges with every line's counter in memory; `None` when one must be loaded first.
    fn charge_loaded(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Option<Result<QuotaDecision, MeterError>> {
        if lines.len() > MAX_LINES {
            return Some(Err(too_many_lines()));
        }
        // The clock converted once, for every line's window and the decision's reset.
        let since_epoch = super::since_epoch(now);
        let secs = since_epoch.as_secs();
        let mut counters = self.counters();
        if let [line] = lines {
            // One line (the key's quota or its owner's, the usual case): one lookup, read and
            // written in place.
            let Counters { states, dirty } = &mut *counters;
            let slot = if self.inner.ledger.is_some() {
                states.get_mut(&line.subject)?
            } else {
                // Nothing to load: an unknown subject starts with no counter.
                states.entry(line.subject).or_insert(Slot::EMPTY)
            };
            let mut current = [line.current_at_secs(slot.state, secs)];
            let decision = QuotaDecision::charge_since(lines, &mut current, cost, since_epoch);
            if decision.allowed {
                slot.set(line.subject, current[0], dirty);
            }
            return Some(Ok(decision));
        }
        let mut states = [UNUSED; MAX_LINES];
        for (state, line) in states.iter_mut().zip(lines) {
            let saved = match counters.state(&line.subject) {
                Some(saved) => saved,
                None if self.inner.ledger.is_some() => return None,
                None => None,
            };
            *state = line.current_at_secs(saved, secs);
        }
        let current = &mut states[..lines.len()];
        let decision = QuotaDecision::charge_since(lines, current, cost, since_epoch);
        if decision.allowed {
            for (line, state) in lines.iter().zip(current.iter()) {
                counters.set(line.subject, *state);
            }
        }
        Some(Ok(decision))
    }

    /// Reads the counters of `lines`' subjects not in memory yet from the ledger.
    async fn load(&self, lines: &[QuotaLine]) -> Result<(), MeterError> {
        let Some(ledger) = &self.inner.ledger else {
            return Ok(());
        };
        let missing: Vec<QuotaSubject> = {
            let counters = self.counters();
            lines
                .iter()
                .map(|line| line.subject)
                .filter(|subject| !counters.states.contains_key(subject))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let loaded = ledger
            .load_counters(&missing)
            .await
            .map_err(|error| MeterError(error.into()))?;
        let mut counters = self.counters();
        for subject in missing {
            let saved = loaded
                .iter()
                .find(|(s, _)| *s == subject)
                .map(|(_, state)| *state);
            // A concurrent load or charge may have got there first: keep what is there.
            counters.states.entry(subject).or_insert(Slot {
                state: saved,
                ..Slot::EMPTY
            });
        }
        Ok(())
    }
}

/// Fills the slots of a charge's state array past its lines.
const UNUSED: CounterState = CounterState {
    kind: super::CounterKind::Credits,
    window: 0,
    value: 0,
    granted: 0,
};

fn too_many_lines() -> MeterError {
    MeterError(format!("a charge spends from at most {MAX_LINES} quota lines").into())
}

#[async_trait]
impl QuotaMeter for InProcessMeter {
    async fn charge(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Result<QuotaDecision, MeterError> {
        loop {
            if let Some(decided) = self.charge_loaded(lines, cost, now) {
                return decided;
            }
            self.load(lines).await?;
        }
    }

    fn decides_now(&self) -> bool {
        true
    }

    fn charge_now(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Option<Result<QuotaDecision, MeterError>> {
        self.charge_loaded(lines, cost, now)
    }

    async fn refund(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        decision: &QuotaDecision,
        now: SystemTime,
    ) -> Result<(), MeterError> {
        if !decision.allowed {
            return Ok(());
        }
        let mut counters = self.counters();
        for (line, window) in lines.iter().zip(decision.windows) {
            let Some(Some(saved)) = counters.state(&line.subject) else {
                continue;
            };
            let current = line.current(Some(saved), now);
            let back = line.quota.give_back(current, cost, window);
            if back != saved {
                counters.set(line.subject, back);
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), MeterError> {
        InProcessMeter::flush(self)
            .await
            .map_err(|error| MeterError(error.into()))
    }

    /// The counter in memory when this process has charged or loaded it; otherwise the
    /// ledger's saved counter, read afresh and not kept: a process that only reads balances
    /// (an admin service beside the services) sees each save, not its first read forever.
    async fn usage(&self, line: &QuotaLine, now: SystemTime) -> Result<QuotaUsage, MeterError> {
        let held = self.counters().state(&line.subject);
        let saved = match (held, &self.inner.ledger) {
            (Some(held), _) => held,
            (None, None) => None,
            (None, Some(ledger)) => ledger
                .load_counter(&line.subject)
                .await
                .map_err(|error| MeterError(error.into()))?,
        };
        Ok(QuotaUsage::of(line, saved, now))
    }
}

impl std::fmt::Debug for InProcessMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessMeter")
            .field("persisted", &self.inner.ledger.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyId;
    use crate::store::StoreError;

    fn line(quota: &str) -> QuotaLine {
        QuotaLine::new(
            QuotaSubject::Key(KeyId::random()),
            quota.parse().unwrap_or_else(|e| panic!("{quota}: {e}")),
        )
    }

    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 43_200)
    }

    /// A ledger in memory that can be told to fail.
    #[derive(Default)]
    struct TestLedger {
        saved: Mutex<HashMap<QuotaSubject, CounterState>>,
        failing: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl QuotaLedger for TestLedger {
        async fn load_counters(
            &self,
            subjects: &[QuotaSubject],
        ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError> {
            let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
            Ok(subjects
                .iter()
                .filter_map(|s| saved.get(s).map(|state| (*s, *state)))
                .collect())
        }

        async fn save_counters(
            &self,
            counters: &[(QuotaSubject, CounterState)],
        ) -> Result<(), StoreError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::unavailable("down"));
            }
            self.saved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(counters.iter().copied());
            Ok(())
        }
    }

    #[tokio::test]
    async fn counts_exactly_and_refunds_within_the_window() -> Result<(), MeterError> {
        let meter = InProcessMeter::new();
        let lines = [line("5/day")];
        for remaining in [3, 1] {
            let decision = meter
                .charge_now(&lines, 2, noon())
                .unwrap_or_else(|| panic!("no I/O"))?;
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = meter.charge(&lines, 2, noon()).await?;
        assert!(!refused.allowed);
        let allowed = meter.charge(&lines, 1, noon()).await?;
        assert_eq!((allowed.allowed, allowed.remaining), (true, 0));
        meter.refund(&lines, 1, &allowed, noon()).await?;
        meter.refund(&lines, 1, &refused, noon()).await?; // a refusal spent nothing: no refund
        let usage = meter.usage(&lines[0], noon()).await?;
        assert_eq!(usage.remaining, 1);
        Ok(())
    }

    /// A balance read for a subject this process holds no counter of reads the ledger each
    /// time and keeps nothing: a reading process sees every save, and its first charge still
    /// loads the saved counter. A counter in memory is answered from memory.
    #[tokio::test]
    async fn usage_reads_the_ledger_afresh_until_the_counter_is_held()
    -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Arc::new(TestLedger::default());
        let lines = [line("10/day")];
        let subject = lines[0].subject;
        let saved = |value| {
            let mut state = lines[0].current(None, noon());
            state.value = value;
            state
        };
        let meter = InProcessMeter::builder()
            .ledger(ledger.clone())
            .flush_interval(Duration::from_secs(3_600))
            .build();
        assert_eq!(meter.usage(&lines[0], noon()).await?.remaining, 10);
        for used in [3, 7] {
            ledger.save_counters(&[(subject, saved(used))]).await?;
            assert_eq!(meter.usage(&lines[0], noon()).await?.remaining, 10 - used);
        }
        assert!(
            meter.charge_now(&lines, 1, noon()).is_none(),
            "reading loaded nothing"
        );
        assert_eq!(meter.charge(&lines, 1, noon()).await?.remaining, 2);
        ledger.save_counters(&[(subject, saved(0))]).await?;
        assert_eq!(
            meter.usage(&lines[0], noon()).await?.remaining,
            2,
            "held in memory: this process's count"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_ledger_is_read_first_and_written_behind() -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Arc::new(TestLedger::default());
        let lines = [line("10/day")];
        let first = InProcessMeter::builder()
            .ledger(ledger.clone())
            .flush_interval(Duration::from_secs(3_600))
            .build();
        assert!(
            first.charge_now(&lines, 1, noon()).is_none(),
            "not loaded yet"
        );
        assert_eq!(first.charge(&lines, 4, noon()).await?.remaining, 6);
        assert_eq!(first.stats().pending, 1);
        ledger.failing.store(true, Ordering::Relaxed);
        assert!(first.flush().await.is_err());
        assert_eq!(first.stats().pending, 1, "kept for the next flush");
        assert_eq!(first.stats().flush_failures, 1);
        ledger.failing.store(false, Ordering::Relaxed);
        first.flush().await?;
        assert_eq!(
            first.stats(),
            MeterStats {
                flushes: 1,
                flush_failures: 1,
                pending: 0
            }
        );
        // A new process starts from what was saved.
        let second = InProcessMeter::builder().ledger(ledger.clone()).build();
        assert_eq!(second.charge(&lines, 1, noon()).await?.remaining, 5);
        Ok(())
    }

    /// A top-up reaches the meter as the line's running total: added once, saved with the
    /// counter; a restart after the save adds nothing more, a crash before it adds the top-up
    /// again from the saved counter (never loses it); the two-line path and usage count it too.
    #[tokio::test]
    async fn top_ups_are_added_once_and_survive_a_restart() -> Result<(), Box<dyn std::error::Error>>
    {
        let ledger = Arc::new(TestLedger::default());
        let build = || {
            InProcessMeter::builder()
                .ledger(ledger.clone())
                .flush_interval(Duration::from_secs(3_600))
                .build()
        };
        let bare = line("credits 1");
        let first = build();
        assert!(first.charge(&[bare], 1, noon()).await?.allowed);
        assert!(!first.charge(&[bare], 1, noon()).await?.allowed);
        let topped = bare.granted(3);
        for remaining in [2, 1, 0] {
            let decision = first.charge_now(&[topped], 1, noon()).ok_or("loaded")??;
            assert_eq!((decision.allowed, decision.remaining), (true, remaining));
        }
        assert!(!first.charge(&[topped], 1, noon()).await?.allowed);
        first.flush().await?;
        // Restarted after the save: the top-up was counted, the balance is spent.
        let second = build();
        assert!(!second.charge(&[topped], 1, noon()).await?.allowed);
        assert_eq!(second.usage(&topped, noon()).await?.state.granted, 3);
        // A later top-up, spent in part and never saved (a crash): it is added again from the
        // saved counter after the restart, never lost and never twice.
        let more = bare.granted(5);
        assert_eq!(second.charge(&[more], 1, noon()).await?.remaining, 1);
        let third = build();
        assert_eq!(third.usage(&more, noon()).await?.remaining, 2);
        // Two lines: each adds its own.
        let owner = line("credits 0").granted(4);
        let decision = third.charge(&[more, owner], 1, noon()).await?;
        assert_eq!((decision.allowed, decision.remaining), (true, 1));
        Ok(())
    }

    /// A counter is listed once for the next save however often it changes, and once again
    /// after a failed save, on the one-line path and the two-line path alike.
    #[tokio::test]
    async fn changed_counters_are_listed_once() -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Arc::new(TestLedger::default());
        let meter = InProcessMeter::builder()
            .ledger(ledger.clone())
            .flush_interval(Duration::from_secs(3_600))
            .build();
        let key = [line("10/day")];
        let both = [line("20/day"), line("credits 30")];
        meter.charge(&key, 1, noon()).await?;
        meter.charge(&both, 1, noon()).await?;
        for _ in 0..3 {
            meter.charge_now(&key, 1, noon()).ok_or("loaded")??;
            meter.charge_now(&both, 1, noon()).ok_or("loaded")??;
        }
        assert_eq!(meter.stats().pending, 3);
        ledger.failing.store(true, Ordering::Relaxed);
        assert!(meter.flush().await.is_err());
        meter.charge_now(&key, 1, noon()).ok_or("loaded")??;
        assert_eq!(
            meter.stats().pending,
            3,
            "listed again once, charged or not"
        );
        ledger.failing.store(false, Ordering::Relaxed);
        meter.flush().await?;
        assert_eq!(meter.stats().pending, 0);
        let subjects = [key[0].subject, both[0].subject, both[1].subject];
        let mut saved = ledger.load_counters(&subjects).await?;
        saved.sort_by_key(|(subject, _)| subjects.iter().position(|s| s == subject));
        let values: Vec<u64> = saved.iter().map(|(_, state)| state.value).collect();
        assert_eq!(values, [5, 4, 26]);
        // A refused charge changes nothing and lists nothing.
        let refused = meter.charge_now(&key, 6, noon()).ok_or("loaded")??;
        assert!(!refused.allowed);
        assert_eq!(meter.stats().pending, 0);
        Ok(())
    }

    #[tokio::test]
    async fn the_flush_task_saves_on_its_own() -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Arc::new(TestLedger::default());
        let lines = [line("credits 9")];
        let meter = InProcessMeter::builder()
            .ledger(ledger.clone())
            .flush_interval(Duration::from_millis(20))
            .build();
        meter.charge(&lines, 2, noon()).await?;
        for _ in 0..200 {
            if meter.stats().pending == 0 && meter.stats().flushes > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let saved = ledger.load_counters(&[lines[0].subject]).await?;
        assert_eq!(saved.first().map(|(_, s)| s.value), Some(7));
        Ok(())
    }

    /// A ledger whose first save waits until released.
    struct GatedLedger {
        saved: Arc<TestLedger>,
        gate: tokio::sync::Semaphore,
        saves: AtomicU64,
    }

    #[async_trait]
    impl QuotaLedger for GatedLedger {
        async fn load_counters(
            &self,
            subjects: &[QuotaSubject],
        ) -> Result<Vec<(QuotaSubject, CounterState)>, StoreError> {
            self.saved.load_counters(subjects).await
        }

        async fn save_counters(
            &self,
            counters: &[(QuotaSubject, CounterState)],
        ) -> Result<(), StoreError> {
            if self.saves.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = self.gate.acquire().await;
            }
            self.saved.save_counters(counters).await
        }
    }

    #[tokio::test]
    async fn saves_never_overlap_so_an_older_counter_never_lands_last()
    -> Result<(), Box<dyn std::error::Error>> {
        let saved = Arc::new(TestLedger::default());
        let ledger = Arc::new(GatedLedger {
            saved: saved.clone(),
            gate: tokio::sync::Semaphore::new(0),
            saves: AtomicU64::new(0),
        });
        let lines = [line("10/day")];
        let meter = InProcessMeter::builder()
            .ledger(ledger.clone())
            .flush_interval(Duration::from_secs(3_600))
            .build();
        meter.charge(&lines, 1, noon()).await?;
        let first = tokio::spawn({
            let meter = meter.clone();
            async move { meter.flush().await }
        });
        while ledger.saves.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The first save (value 1) is in flight; a second flush must wait for it.
        meter.charge(&lines, 1, noon()).await?;
        let second = tokio::spawn({
            let meter = meter.clone();
            async move { meter.flush().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        ledger.gate.add_permits(1);
        first.await??;
        second.await??;
        let stored = saved.load_counters(&[lines[0].subject]).await?;
        assert_eq!(stored.first().map(|(_, s)| s.value), Some(2));
        Ok(())
    }
}
