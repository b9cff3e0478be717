//! The audit pipeline: a bounded channel from the request path to a background task that hands
//! batches to the sinks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::{AuditEvent, AuditSink};

/// Counters of the audit pipeline, from [`Verifier::audit_stats`](crate::Verifier::audit_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Events accepted into the buffer.
    pub recorded: u64,
    /// Events dropped because the buffer was full (the sinks fell behind): never written.
    pub dropped: u64,
    /// Events handed to the sinks.
    pub written: u64,
    /// Events a sink could not take and that no longer fit its retry buffer: never written
    /// there. Counted once per sink.
    pub lost: u64,
    /// Batch writes a sink refused (their events are retried with the next batch).
    pub failed_writes: u64,
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
    running: AtomicBool,
    start: Mutex<()>,
    recorded: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    lost: AtomicU64,
    failed_writes: AtomicU64,
}

impl Auditor {
    pub(crate) fn new(sinks: Vec<Arc<dyn AuditSink>>, buffer: usize, batch: usize) -> Self {
        let buffer = buffer.max(1);
        let (tx, rx) = mpsc::channel(buffer);
        Self {
            tx,
            shared: Arc::new(Shared {
                sinks: sinks.into_boxed_slice(),
                rx: tokio::sync::Mutex::new(rx),
                batch: batch.max(1),
                retry_capacity: buffer,
                running: AtomicBool::new(false),
                start: Mutex::new(()),
                recorded: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                written: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                failed_writes: AtomicU64::new(0),
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

    /// Waits until every event recorded before the call has been handed to the sinks.
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
        loop {
            // Closed and drained: every verifier handle is gone. Write what is left and stop.
            if rx.recv_many(&mut messages, self.batch).await == 0 {
                break;
            }
            let mut flushes = Vec::new();
            for message in messages.drain(..) {
                match message {
                    Msg::Event(event) => events.push(event),
                    Msg::Flush(done) => flushes.push(done),
                }
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
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events.clear();
    }
}
