//! The audit pipeline: a bounded channel from the request path to a background task that hands
//! batches to the sinks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::fold::{Added, Folder, weight};
use super::{AuditEvent, AuditSink, FOLD_INTERVAL, MAX_OPEN_FOLDS};

/// Counters of the audit pipeline, from [`Verifier::audit_stats`](crate::Verifier::audit_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Events accepted into the buffer.
    pub recorded: u64,
    /// Events dropped because the buffer was full (the sinks fell behind): never written.
    pub dropped: u64,
    /// Events handed to the sinks; a folded [`Action::Denials`](super::Action::Denials) event
    /// counts as the denials it stands for, so after a flush `written` equals `recorded`
    /// (less any lost).
    pub written: u64,
    /// Events a sink could not take and that no longer fit its retry buffer: never written
    /// there. Counted once per sink.
    pub lost: u64,
    /// Batch writes a sink refused (their events are retried with the next batch).
    pub failed_writes: u64,
    /// Denials folded into [`Action::Denials`](super::Action::Denials) events instead of being
    /// written one by one (see [`is_folded`](super::is_folded)).
    pub folded: u64,
    /// Of `folded`, those from clients beyond [`MAX_OPEN_FOLDS`]: counted in one
    /// "other clients" event per reason. Non-zero means a flood from many addresses.
    pub folded_other_clients: u64,
}

enum Msg {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Auditor {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

struct Shared {
    sinks: Box<[Arc<dyn AuditSink>]>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Msg>>,
    batch: usize,
    /// Most events kept per sink for a retry after a failed write.
    retry_capacity: usize,
    /// How long a fold stays open.
    fold_interval: Duration,
    /// Most client folds open at once.
    fold_cap: usize,
    running: AtomicBool,
    start: Mutex<()>,
    recorded: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    lost: AtomicU64,
    failed_writes: AtomicU64,
    folded: AtomicU64,
    folded_other_clients: AtomicU64,
}

impl Auditor {
    pub(crate) fn new(sinks: Vec<Arc<dyn AuditSink>>, buffer: usize, batch: usize) -> Self {
        Self::folding(sinks, buffer, batch, FOLD_INTERVAL, MAX_OPEN_FOLDS)
    }

    /// [`Auditor::new`] with the fold interval and cap chosen (tests).
    fn folding(
        sinks: Vec<Arc<dyn AuditSink>>,
        buffer: usize,
        batch: usize,
        fold_interval: Duration,
        fold_cap: usize,
    ) -> Self {
        let buffer = buffer.max(1);
        let (tx, rx) = mpsc::channel(buffer);
        Self {
            tx,
            shared: Arc::new(Shared {
                sinks: sinks.into_boxed_slice(),
                rx: tokio::sync::Mutex::new(rx),
                batch: batch.max(1),
                retry_capacity: buffer,
                fold_interval,
                fold_cap,
                running: AtomicBool::new(false),
                start: Mutex::new(()),
                recorded: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                written: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                failed_writes: AtomicU64::new(0),
                folded: AtomicU64::new(0),
                folded_other_clients: AtomicU64::new(0),
            }),
        }
    }

    /// Whether any sink wants events now.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.shared.sinks.iter().any(|sink| sink.enabled())
    }

    /// Queues `event` without waiting: a full buffer drops it and counts the drop.
    pub(crate) fn record(&self, event: AuditEvent) {
        self.ensure_worker();
        match self.tx.try_send(Msg::Event(event)) {
            Ok(()) => {
                self.shared.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::audit_dropped();
            }
        }
    }

    /// Waits until every event recorded before the call has been handed to the sinks, open
    /// folds included.
    pub(crate) async fn flush(&self) {
        self.ensure_worker();
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub(crate) fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            recorded: s.recorded.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            failed_writes: s.failed_writes.load(Ordering::Relaxed),
            folded: s.folded.load(Ordering::Relaxed),
            folded_other_clients: s.folded_other_clients.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn ensure_worker(&self) {
        if !self.shared.running.load(Ordering::Acquire) {
            self.start_worker();
        }
    }

    /// Starts the background writer on the current tokio runtime (again, if the runtime it ran
    /// on shut down). Without a runtime, events wait in the buffer for the next start.
    #[cold]
    #[inline(never)]
    fn start_worker(&self) {
        let _one_at_a_time = self
            .shared
            .start
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.shared.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.shared.running.store(true, Ordering::Release);
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            let running = Running(Arc::clone(&shared));
            shared.run().await;
            drop(running);
        });
    }
}

/// Marks the worker stopped when its task ends or is dropped with its runtime.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

impl Shared {
    async fn run(&self) {
        let mut rx = self.rx.lock().await;
        let mut messages = Vec::with_capacity(self.batch);
        let mut events = Vec::with_capacity(self.batch);
        let mut retry: Vec<Vec<AuditEvent>> = vec![Vec::new(); self.sinks.len()];
        let mut folder = Folder::new(self.fold_cap);
        // When the open folds close: an interval after the first of them opened.
        let mut fold_deadline: Option<tokio::time::Instant> = None;
        loop {
            // `recv_many` is cancel safe: a timeout loses no message.
            let received = match fold_deadline {
                Some(at) => tokio::time::timeout_at(at, rx.recv_many(&mut messages, self.batch))
                    .await
                    .ok(),
                None => Some(rx.recv_many(&mut messages, self.batch).await),
            };
            let Some(received) = received else {
                // The interval is over: the folds go to the sinks.
                folder.drain_into(&mut events);
                fold_deadline = None;
                self.write(&mut events, &mut retry).await;
                continue;
            };
            // Closed and drained: every verifier handle is gone. Write what is left and stop.
            if received == 0 {
                folder.drain_into(&mut events);
                self.write(&mut events, &mut retry).await;
                break;
            }
            let mut flushes = Vec::new();
            for message in messages.drain(..) {
                match message {
                    Msg::Event(event) => match Folder::folds(&event) {
                        Some(reason) => {
                            self.folded.fetch_add(1, Ordering::Relaxed);
                            if folder.add(&event, reason) == Added::Other {
                                self.folded_other_clients.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => events.push(event),
                    },
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            let now = tokio::time::Instant::now();
            // A flush (shutdown) closes the folds early: nothing is left behind. The deadline
            // is checked here too: under a steady flood `recv_many` is always ready, and the
            // timeout above, which polls it first, would never fire.
            if !flushes.is_empty() || fold_deadline.is_some_and(|at| now >= at) {
                folder.drain_into(&mut events);
                fold_deadline = None;
            } else if fold_deadline.is_none() && !folder.is_empty() {
                fold_deadline = Some(now + self.fold_interval);
            }
            self.write(&mut events, &mut retry).await;
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    async fn write(&self, events: &mut Vec<AuditEvent>, retry: &mut [Vec<AuditEvent>]) {
        for (sink, pending) in self.sinks.iter().zip(retry.iter_mut()) {
            if pending.is_empty() && events.is_empty() {
                continue;
            }
            let result = if pending.is_empty() {
                sink.write(events).await
            } else {
                pending.extend(events.iter().cloned());
                sink.write(pending).await
            };
            match result {
                Ok(()) => pending.clear(),
                Err(error) => {
                    self.failed_writes.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::audit_failed_write();
                    tracing::warn!(target: "keygate", %error, "audit sink refused a batch; retrying with the next one");
                    if pending.is_empty() {
                        pending.extend(events.iter().cloned());
                    }
                    // Bounded: the oldest go first, counted.
                    if let Some(excess) = pending.len().checked_sub(self.retry_capacity) {
                        pending.drain(..excess);
                        self.lost.fetch_add(excess as u64, Ordering::Relaxed);
                        crate::metrics::audit_lost(excess as u64);
                    }
                }
            }
        }
        self.written
            .fetch_add(events.iter().map(weight).sum(), Ordering::Relaxed);
        events.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::SystemTime;

    use async_trait::async_trait;

    use super::*;
    use crate::audit::{Action, AuditError, Outcome};
    use crate::rejection::Reason;

    #[derive(Default)]
    struct Collect(Mutex<Vec<AuditEvent>>);

    #[async_trait]
    impl AuditSink for Collect {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(events);
            Ok(())
        }
    }

    impl Collect {
        fn take(&self) -> Vec<AuditEvent> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    fn unknown(ip: [u8; 4]) -> AuditEvent {
        let mut e = AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Denied)
            .reason(Some(Reason::UnknownKey));
        e.client_ip = Some(IpAddr::from(ip));
        e
    }

    #[tokio::test]
    async fn folds_close_at_the_interval_end_and_on_flush() {
        let sink = Arc::new(Collect::default());
        let auditor = Auditor::folding(
            vec![sink.clone() as Arc<dyn AuditSink>],
            1_000,
            64,
            Duration::from_millis(200),
            2,
        );
        for _ in 0..100 {
            auditor.record(unknown([192, 0, 2, 1]));
        }
        // Three clients, a cap of two: the third goes to "other clients".
        auditor.record(unknown([192, 0, 2, 2]));
        auditor.record(unknown([192, 0, 2, 3]));
        let kept = AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Denied)
            .reason(Some(Reason::WrongSecret));
        auditor.record(kept.clone());
        // No flush: the interval's end alone writes the folds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 4 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            got.extend(sink.take());
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0], kept,
            "a real key's denial is its own event, at once"
        );
        let counts: Vec<_> = got[1..]
            .iter()
            .map(|e| {
                let f = e.folded.as_ref().unwrap_or_else(|| panic!("{e:?}"));
                assert_eq!(e.action, Action::Denials);
                (e.client_ip, f.count, f.other_clients)
            })
            .collect();
        assert!(counts.contains(&(Some(IpAddr::from([192, 0, 2, 1])), 100, false)));
        assert!(counts.contains(&(Some(IpAddr::from([192, 0, 2, 2])), 1, false)));
        assert!(counts.contains(&(None, 1, true)));
        let stats = auditor.stats();
        assert_eq!((stats.folded, stats.folded_other_clients), (102, 1));
        assert_eq!(stats.written, stats.recorded);

        // A flush closes an open fold at once.
        auditor.record(unknown([192, 0, 2, 1]));
        auditor.flush().await;
        let got = sink.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].folded.as_ref().map(|f| f.count), Some(1));
        assert_eq!(auditor.stats().written, auditor.stats().recorded);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn folds_close_on_time_under_a_steady_flood() {
        let sink = Arc::new(Collect::default());
        let auditor = Auditor::folding(
            vec![sink.clone() as Arc<dyn AuditSink>],
            100_000,
            64,
            Duration::from_millis(100),
            8,
        );
        let started = std::time::Instant::now();
        // The buffer never runs dry, so the worker's receive is always ready.
        while started.elapsed() < Duration::from_secs(3)
            && sink
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            for _ in 0..256 {
                auditor.record(unknown([192, 0, 2, 1]));
            }
            tokio::task::yield_now().await;
        }
        let waited = started.elapsed();
        assert!(
            !sink.take().is_empty(),
            "no fold written in {waited:?} of a steady flood (interval 100 ms)"
        );
    }
}
