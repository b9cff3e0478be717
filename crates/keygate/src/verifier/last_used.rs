//! Last-used tracking, write-behind: the request path only flags a key now and then; a
//! background task writes batches to the store.
//!
//! # Cost on the request path
//! A successful verification reads one atomic in the cached entry (the time this key was last
//! reported). Only when that report is older than the flush interval does it swap in the current
//! time (compare-and-swap, so one request per interval wins) and `try_send` the id into a bounded
//! channel. No allocation, no lock, no waiting; a full channel drops the report and counts it.
//!
//! # Writes
//! The flusher wakes every interval, drains the channel, keeps the latest time per key and hands
//! the batch to [`KeyStore::record_last_used`]. So each key is written at most once per interval
//! per verifier. A failed write keeps the batch for the next flush.
//! [`Verifier::flush_last_used`](crate::Verifier::flush_last_used) flushes on demand (call it on shutdown).
//!
//! # Re-hashing under the current pepper
//! A key that verifies under an older pepper version is re-hashed under the current one: the
//! request that finds it (once per cached entry) computes the new digest and queues it here;
//! the same flusher hands the batch to [`KeyStore::rehash`], which moves the key only if it
//! is still under the old version. Once no key is left under an old version (`keygate
//! peppers`), that pepper can be retired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::cache::CachedKey;
use crate::key::{KeyId, PresentedKey};
use crate::keyring::Keyring;
use crate::store::{KeyRehash, KeyStore, StoreError};

/// Counters of the last-used write-behind, from [`Verifier::last_used_stats`](crate::Verifier::last_used_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastUsedStats {
    /// Reports dropped because the buffer was full (raise the buffer or shorten the interval).
    pub dropped: u64,
    /// Last-used times handed to the store (one per key per flush).
    pub written: u64,
    /// Flushes the store refused (their batch is retried at the next flush).
    pub failed_flushes: u64,
    /// Keys handed to the store to move to the current pepper.
    pub rehashed: u64,
}

/// How often queued re-hashes are written when last-used tracking is off.
const REHASH_INTERVAL: Duration = Duration::from_secs(60);

/// Microseconds since the Unix epoch; 0 for earlier times.
#[inline]
pub(crate) fn micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(crate) struct LastUsed {
    /// Zero: tracking is off.
    interval_micros: u64,
    interval: Duration,
    tx: mpsc::Sender<(KeyId, SystemTime)>,
    rehash_tx: mpsc::Sender<KeyRehash>,
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn KeyStore>,
    batch: tokio::sync::Mutex<Batch>,
    /// The background flusher, once started; restarted if its runtime went away.
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
    written: AtomicU64,
    failed_flushes: AtomicU64,
    rehashed: AtomicU64,
}

struct Batch {
    rx: mpsc::Receiver<(KeyId, SystemTime)>,
    pending: HashMap<KeyId, SystemTime>,
    rehash_rx: mpsc::Receiver<KeyRehash>,
    rehashes: HashMap<KeyId, KeyRehash>,
}

impl LastUsed {
    /// `interval` zero turns tracking off.
    pub(crate) fn new(store: Arc<dyn KeyStore>, interval: Duration, buffer: usize) -> Self {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let (rehash_tx, rehash_rx) = mpsc::channel(buffer.max(1));
        Self {
            interval_micros: u64::try_from(interval.as_micros()).unwrap_or(u64::MAX),
            interval,
            tx,
            rehash_tx,
            shared: Arc::new(Shared {
                store,
                batch: tokio::sync::Mutex::new(Batch {
                    rx,
                    pending: HashMap::new(),
                    rehash_rx,
                    rehashes: HashMap::new(),
                }),
                flusher: Mutex::new(None),
                dropped: AtomicU64::new(0),
                written: AtomicU64::new(0),
                failed_flushes: AtomicU64::new(0),
                rehashed: AtomicU64::new(0),
            }),
        }
    }

    /// Called on every successful verification: cheap unless this key is due a report.
    /// `now_nanos`: `now` in nanoseconds since the Unix epoch, as the check may already have
    /// computed it (for the rate limiter): asked only while tracking is on.
    #[inline]
    pub(crate) fn seen(
        &self,
        entry: &CachedKey,
        id: KeyId,
        now: SystemTime,
        now_nanos: impl FnOnce() -> u64,
    ) {
        if self.interval_micros == 0 {
            return;
        }
        let now_micros = now_nanos() / 1_000;
        let last = entry.last_reported.load(Ordering::Relaxed);
        if now_micros.saturating_sub(last) < self.interval_micros {
            return;
        }
        // One request per interval wins the swap and reports; the others return.
        if entry
            .last_reported
            .compare_exchange(last, now_micros, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.report(id, now);
        }
    }

    #[cold]
    #[inline(never)]
    fn report(&self, id: KeyId, at: SystemTime) {
        self.ensure_flusher();
        match self.tx.try_send((id, at)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::last_used_dropped();
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Called after a key's secret matched: if the key is stored under an older pepper than
    /// the current one, queues its digest under the current pepper (once per cached entry).
    /// One comparison for keys under the current pepper.
    #[inline]
    pub(crate) fn rehash_if_old(&self, entry: &CachedKey, key: &PresentedKey, keyring: &Keyring) {
        if entry.pepper_version != keyring.peppers().current().version() {
            self.queue_rehash(entry, key, keyring);
        }
    }

    #[cold]
    #[inline(never)]
    fn queue_rehash(&self, entry: &CachedKey, key: &PresentedKey, keyring: &Keyring) {
        if entry.rehash_queued.swap(true, Ordering::Relaxed) {
            return;
        }
        let (version, digest) = keyring.peppers().digest(key.digest_input());
        let rehash = KeyRehash::new(key.id(), entry.pepper_version, version, digest);
        self.ensure_flusher();
        match self.rehash_tx.try_send(rehash) {
            Ok(()) => {}
            // Dropped: a later load of this key (a fresh cache entry) queues it again.
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Starts the background flusher on the current tokio runtime if it is not running (never
    /// started, or its runtime shut down). Runs at most once per key per interval, so the lock
    /// is off the per-request path. Without a runtime the reports wait in the buffer for an
    /// explicit flush.
    fn ensure_flusher(&self) {
        let mut flusher = self
            .shared
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flusher.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::downgrade(&self.shared);
        let interval = if self.interval.is_zero() {
            REHASH_INTERVAL
        } else {
            self.interval
        };
        *flusher = Some(runtime.spawn(flusher_task(shared, interval)));
    }

    /// Writes everything reported so far. Returns how many keys were written.
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        self.shared.flush().await
    }

    pub(crate) fn stats(&self) -> LastUsedStats {
        let shared = &self.shared;
        LastUsedStats {
            dropped: shared.dropped.load(Ordering::Relaxed),
            written: shared.written.load(Ordering::Relaxed),
            failed_flushes: shared.failed_flushes.load(Ordering::Relaxed),
            rehashed: shared.rehashed.load(Ordering::Relaxed),
        }
    }
}

/// Flushes every `interval` while the verifier lives; a last flush after it is dropped.
async fn flusher_task(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Errors are counted and logged inside; the batch waits for the next tick.
        let _ = shared.flush().await;
    }
}

impl Shared {
    async fn flush(&self) -> Result<usize, StoreError> {
        let mut batch = self.batch.lock().await;
        let Batch {
            rx,
            pending,
            rehash_rx,
            rehashes,
        } = &mut *batch;
        while let Ok(rehash) = rehash_rx.try_recv() {
            rehashes.insert(rehash.id, rehash);
        }
        if !rehashes.is_empty() {
            let keys: Vec<KeyRehash> = rehashes.values().cloned().collect();
            match self.store.rehash(&keys).await {
                Ok(()) => {
                    rehashes.clear();
                    self.rehashed
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed_flushes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "keygate", keys = keys.len(), %error, "could not re-hash keys under the current pepper; will retry");
                    return Err(error);
                }
            }
        }
        while let Ok((id, at)) = rx.try_recv() {
            pending
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let used: Vec<(KeyId, SystemTime)> = pending.iter().map(|(id, at)| (*id, *at)).collect();
        match self.store.record_last_used(&used).await {
            Ok(()) => {
                pending.clear();
                self.written.fetch_add(used.len() as u64, Ordering::Relaxed);
                crate::metrics::last_used_written(used.len() as u64);
                Ok(used.len())
            }
            Err(error) => {
                self.failed_flushes.fetch_add(1, Ordering::Relaxed);
                crate::metrics::last_used_failed_flush();
                tracing::warn!(target: "keygate", keys = used.len(), %error, "could not record last-used times; will retry");
                Err(error)
            }
        }
    }
}

impl std::fmt::Debug for LastUsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastUsed")
            .field("interval", &self.interval)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
