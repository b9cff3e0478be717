//! The audit pipeline: a bounded queue from the request path to a background task that hands
//! batches to the sinks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::fold::{Added, Folder, weight};
use super::request::RequestEvent;
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
    /// there. Counted once per sink. Also what the writer held when it stopped — taken from
    /// the buffer, being written, folded, or waiting for a retry: its runtime shut down under
    /// it (the verifier starts another on the next event), or the verifier was dropped while a
    /// sink still refused its events.
    pub lost: u64,
    /// Batch writes a sink refused (their events are retried with the next batch), and
    /// flushes ([`AuditSink::flush`]) it refused (it keeps what it held for the next).
    pub failed_writes: u64,
    /// Denials folded into [`Action::Denials`](super::Action::Denials) events instead of being
    /// written one by one (see [`is_folded`](super::is_folded)).
    pub folded: u64,
    /// Of `folded`, those from clients beyond [`MAX_OPEN_FOLDS`]: counted in one
    /// "other clients" event per reason. Non-zero means a flood from many addresses.
    pub folded_other_clients: u64,
}

/// How long the pipeline lets a partial batch gather more events before writing it, by
/// default ([`VerifierBuilder::audit_linger`](crate::VerifierBuilder::audit_linger)): half a
/// second. Meanwhile it is not woken per event, and the sinks get fewer, larger batches (one
/// transaction each in keygate-sqlx's sink, whose cost is mostly per transaction). A whole
/// batch waiting, or a flush, ends the wait early.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(500);

/// Messages' room the writer keeps in its vectors between takes, whatever the load.
const MIN_KEPT_CAPACITY: usize = 1_024;

/// How many recent takes (and batches) decide how much room the vectors keep: a vector is
/// trimmed only when it is more than twice as large as the largest of them. Under a steady load
/// the takes are about the same size, and a vector trimmed after a small one (the rest of a
/// backlog) would grow again under the request path's pushes, reallocating and faulting pages
/// in.
const TAKES_REMEMBERED: usize = 8;

/// How often a lingering pipeline takes what is queued and looks whether it holds a whole
/// batch.
const LINGER_TICK: Duration = Duration::from_millis(10);

/// How often, at most, the pipeline calls [`AuditSink::flush`] while events flow: a second. A
/// sink that aggregates (keygate-sqlx's per-day usage counts) writes its counts then.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What the queue holds. Its vectors' elements are as large as the largest variant, and every
/// byte a request writes into them is read back by the writer's core (so taken back from it by
/// the next push): a request's event is queued in its compact form (128 bytes against an
/// [`AuditEvent`]'s 200) and made into an `AuditEvent` by the writer; other events, rare, are
/// boxed.
enum Msg {
    Request(RequestEvent),
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// How the pipeline runs: its buffer, batch size, linger, and where its task runs.
#[derive(Debug, Clone)]
pub(crate) struct PipelineConfig {
    pub(crate) buffer: usize,
    pub(crate) batch: usize,
    pub(crate) linger: Duration,
    /// The runtime the writer task runs on; `None`: the runtime of the first event.
    pub(crate) runtime: Option<Handle>,
}

pub(crate) struct Auditor {
    shared: Arc<Shared>,
    /// The only sink is the default [`TracingSink`](super::TracingSink): whether it wants
    /// events is asked of `tracing` directly, not through the shared state, the sink list and
    /// a virtual call (three cold cache lines a request, `loadbench --cache-sim`).
    only_tracing: bool,
}

/// The buffer between the request path and the writer: messages in a vector behind a mutex.
/// Recording an event takes the lock to push it (two atomic operations, no allocation once the
/// vectors have grown, and no other counter touched); the writer takes everything waiting at
/// once by swapping vectors, so the lock is never held for longer than a push or a swap. It
/// replaces a tokio `mpsc` channel, which took a semaphore permit, a slot and a wake-up per
/// event, and gave them back one by one on the writer's side.
struct Queue {
    state: Mutex<QueueState>,
    /// Most events held: queued, plus taken by the writer and not yet handled.
    capacity: usize,
    /// Wakes the writer waiting for a first message.
    ready: Notify,
}

struct QueueState {
    messages: Vec<Msg>,
    /// Messages the writer took and has not handled yet: they count against the capacity.
    in_hand: usize,
    /// The writer waits for a message: the next push wakes it.
    waiting: bool,
    /// The auditor is gone: nothing more comes.
    closed: bool,
    recorded: u64,
    dropped: u64,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                messages: Vec::new(),
                in_hand: 0,
                waiting: false,
                closed: false,
                recorded: 0,
                dropped: 0,
            }),
            capacity,
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` (an event) unless the buffer is full; whether it was queued.
    fn push(&self, message: Msg) -> bool {
        let mut state = self.lock();
        if state.messages.len() + state.in_hand >= self.capacity {
            state.dropped += 1;
            return false;
        }
        state.messages.push(message);
        state.recorded += 1;
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Queues a flush request, whatever the buffer holds: it is answered once what was
    /// queued before it has been handled.
    fn push_flush(&self, done: oneshot::Sender<()>) {
        let mut state = self.lock();
        state.messages.push(Msg::Flush(done));
        state.waiting = false;
        drop(state);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Waits until a message is queued or the queue is closed (cancel safe: it takes nothing).
    async fn wait(&self) {
        loop {
            {
                let mut state = self.lock();
                if !state.messages.is_empty() || state.closed {
                    return;
                }
                state.waiting = true;
            }
            // A push between the unlock and here stores a permit: the wait ends at once.
            self.ready.notified().await;
        }
    }

    /// Swaps every queued message into `spare` (empty: its room becomes the queue's) and
    /// counts them in hand until [`Queue::handled`]. Only a swap under the lock: the writer
    /// moves the messages on after unlocking, so a request recording its event never waits
    /// behind a copy (appending a lingered batch of 16,384 events here held the lock for a
    /// 3 MB copy of 200-byte events, and the request thread slept on it). Returns whether the
    /// queue is closed (and everything queued before is in `spare`).
    fn take(&self, spare: &mut Vec<Msg>) -> bool {
        debug_assert!(spare.is_empty(), "the spare vector is handed over empty");
        let mut state = self.lock();
        state.in_hand += state.messages.len();
        std::mem::swap(spare, &mut state.messages);
        state.closed
    }

    /// The writer handled `n` of the messages it took: they no longer count.
    fn handled(&self, n: usize) {
        let mut state = self.lock();
        state.in_hand = state.in_hand.saturating_sub(n);
    }
}

struct Shared {
    sinks: Box<[Arc<dyn AuditSink>]>,
    queue: Queue,
    batch: usize,
    linger: Duration,
    /// Queued events that end a linger: a batch, or half the buffer if that is less (so
    /// events keep room while the batch is written).
    linger_until_queued: usize,
    runtime: Option<Handle>,
    /// Cuts a linger short when a flush is waiting.
    flush_requested: Notify,
    /// Most events kept per sink for a retry after a failed write.
    retry_capacity: usize,
    /// How long a fold stays open.
    fold_interval: Duration,
    /// Most client folds open at once.
    fold_cap: usize,
    running: AtomicBool,
    start: Mutex<()>,
    written: AtomicU64,
    lost: AtomicU64,
    failed_writes: AtomicU64,
    folded: AtomicU64,
    folded_other_clients: AtomicU64,
}

impl Auditor {
    pub(crate) fn new(sinks: Vec<Arc<dyn AuditSink>>, config: PipelineConfig) -> Self {
        Self::folding(sinks, config, FOLD_INTERVAL, MAX_OPEN_FOLDS)
    }

    /// An auditor whose sinks are `sinks`, or the default [`TracingSink`](super::TracingSink)
    /// alone when there are none.
    pub(crate) fn or_tracing(sinks: Vec<Arc<dyn AuditSink>>, config: PipelineConfig) -> Self {
        if sinks.is_empty() {
            let mut auditor = Self::new(vec![Arc::new(super::TracingSink)], config);
            auditor.only_tracing = true;
            auditor
        } else {
            Self::new(sinks, config)
        }
    }

    /// [`Auditor::new`] with the fold interval and cap chosen (tests).
    fn folding(
        sinks: Vec<Arc<dyn AuditSink>>,
        config: PipelineConfig,
        fold_interval: Duration,
        fold_cap: usize,
    ) -> Self {
        let buffer = config.buffer.max(1);
        Self {
            shared: Arc::new(Shared {
                sinks: sinks.into_boxed_slice(),
                queue: Queue::new(buffer),
                batch: config.batch.max(1),
                linger: config.linger,
                linger_until_queued: config.batch.min(buffer / 2).max(1),
                runtime: config.runtime,
                flush_requested: Notify::new(),
                retry_capacity: buffer,
                fold_interval,
                fold_cap,
                running: AtomicBool::new(false),
                start: Mutex::new(()),
                written: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                failed_writes: AtomicU64::new(0),
                folded: AtomicU64::new(0),
                folded_other_clients: AtomicU64::new(0),
            }),
            only_tracing: false,
        }
    }

    /// Whether any sink wants events now.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        if self.only_tracing {
            return super::TracingSink.enabled();
        }
        self.shared.sinks.iter().any(|sink| sink.enabled())
    }

    /// Queues `event` without waiting: a full buffer drops it and counts the drop.
    pub(crate) fn record(&self, event: AuditEvent) {
        self.queue(Msg::Event(Box::new(event)));
    }

    /// [`Auditor::record`] for a request's event, queued in its compact form.
    pub(crate) fn record_request(&self, event: RequestEvent) {
        self.queue(Msg::Request(event));
    }

    fn queue(&self, message: Msg) {
        self.ensure_worker();
        if !self.shared.queue.push(message) {
            crate::metrics::audit_dropped();
        }
    }

    /// Waits until every event recorded before the call has been handed to the sinks, open
    /// folds included.
    pub(crate) async fn flush(&self) {
        self.ensure_worker();
        let (done, wait) = oneshot::channel();
        self.shared.queue.push_flush(done);
        self.shared.flush_requested.notify_one();
        let _ = wait.await;
    }

    pub(crate) fn stats(&self) -> AuditStats {
        let s = &self.shared;
        let (recorded, dropped) = {
            let queue = s.queue.lock();
            (queue.recorded, queue.dropped)
        };
        AuditStats {
            recorded,
            dropped,
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

    /// Starts the background writer on the configured runtime, else the current one (again, if
    /// the runtime it ran on shut down). Without a runtime, events wait in the buffer for the
    /// next start.
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
        let Some(runtime) = self
            .shared
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok())
        else {
            return;
        };
        // A writer before this one (its runtime shut down) counted what it held as lost and
        // gave its room back when it was dropped (`Holding`).
        self.shared.running.store(true, Ordering::Release);
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            let running = Running(Arc::clone(&shared));
            shared.run().await;
            drop(running);
        });
    }
}

impl Drop for Auditor {
    /// Nothing more comes: the writer hands what is queued to the sinks, flushes them and
    /// ends.
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// The writer's side of the queue's two vectors: they trade places with every take, so the
/// vector requests push into only ever holds what arrived since the last take — a lingering
/// writer takes every [`LINGER_TICK`], so that is ~10 ms of events, whose memory stays in the
/// request core's cache instead of a whole batch's (2 MB: 16,384 messages of 128 bytes) being
/// written cold.
struct Inbox {
    /// Empty between takes; its room becomes the queue's at the next.
    spare: Vec<Msg>,
    takes: Recent,
}

impl Inbox {
    fn new() -> Self {
        Self {
            spare: Vec::new(),
            takes: Recent::default(),
        }
    }

    /// Takes everything queued onto the end of `taken`; whether the queue is closed.
    fn take(&mut self, queue: &Queue, taken: &mut Vec<Msg>) -> bool {
        let closed = queue.take(&mut self.spare);
        self.takes.note(self.spare.len());
        taken.append(&mut self.spare);
        self.takes.trim(&mut self.spare);
        closed
    }
}

/// The sizes of the last [`TAKES_REMEMBERED`] takes (or batches), in turn: a vector they fill
/// keeps room for the largest of them.
#[derive(Default)]
struct Recent {
    sizes: [usize; TAKES_REMEMBERED],
    next: usize,
}

impl Recent {
    fn note(&mut self, size: usize) {
        self.sizes[self.next] = size;
        self.next = (self.next + 1) % TAKES_REMEMBERED;
    }

    /// Gives back the memory of a burst once the recent sizes were small: `vector` is trimmed
    /// to the largest of them (at least [`MIN_KEPT_CAPACITY`]) only when more than twice as
    /// large, since a vector trimmed after one small take (the rest of a backlog) would grow
    /// again under the request path's pushes, reallocating and faulting pages in.
    fn trim(&self, vector: &mut Vec<Msg>) {
        let room = self
            .sizes
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(MIN_KEPT_CAPACITY);
        if vector.capacity() > room.saturating_mul(2) {
            vector.shrink_to(room);
        }
    }
}

/// What the writer holds and has not handed to every sink: messages taken from the queue,
/// the batch being written, the open folds, and each sink's retry buffer. Whatever is left when
/// the writer goes — dropped with its runtime mid-write, or ended with a sink still refusing —
/// is never written: counted lost (once per sink for a retry buffer), and the taken messages'
/// room is given back to the queue.
struct Holding<'a> {
    shared: &'a Shared,
    /// Messages taken from the queue and not handled yet, oldest first: usually one batch or
    /// less, more when the sinks fell behind (then handled a batch at a time). Not allocated up
    /// front: a quiet service never needs a whole batch.
    taken: Vec<Msg>,
    /// The batch being handed to the sinks.
    events: Vec<AuditEvent>,
    /// Sinks done with `events` (written, or kept in their retry buffer).
    delivered: usize,
    /// Per sink, the events it refused, retried with the next batch.
    retry: Vec<Vec<AuditEvent>>,
    folder: Folder,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let taken = self.taken.len();
        let sinks = self.shared.sinks.len() as u64;
        // Once per sink that never got them, as a retry buffer's overflow is counted.
        let unhanded = self
            .taken
            .iter()
            .filter(|m| matches!(m, Msg::Event(_) | Msg::Request(_)))
            .count() as u64
            + self.folder.weight();
        let lost = unhanded * sinks
            + self.events.iter().map(weight).sum::<u64>() * (sinks - self.delivered as u64)
            + self.retry.iter().flatten().map(weight).sum::<u64>();
        self.shared.queue.handled(taken);
        if lost > 0 {
            self.shared.lost.fetch_add(lost, Ordering::Relaxed);
            crate::metrics::audit_lost(lost);
            tracing::warn!(target: "keygate", lost, "audit writer stopped holding events it could not write");
        }
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
        let mut holding = Holding {
            shared: self,
            taken: Vec::new(),
            events: Vec::new(),
            delivered: 0,
            retry: vec![Vec::new(); self.sinks.len()],
            folder: Folder::new(self.fold_cap),
        };
        let Holding {
            taken,
            events,
            delivered,
            retry,
            folder,
            ..
        } = &mut holding;
        // When the open folds close: an interval after the first of them opened.
        let mut fold_deadline: Option<Instant> = None;
        // When the sinks are flushed: an interval after the first write since the last flush.
        let mut flush_deadline: Option<Instant> = None;
        let mut inbox = Inbox::new();
        // The sizes of the last batches taken in hand.
        let mut batches = Recent::default();
        loop {
            let deadline = earliest(fold_deadline, flush_deadline);
            // Closed, and everything queued before taken.
            let mut closed = false;
            if taken.is_empty() {
                // `wait` is cancel safe: a timeout loses no message.
                let ready = match deadline {
                    Some(at) => tokio::time::timeout_at(at, self.queue.wait()).await.is_ok(),
                    None => {
                        self.queue.wait().await;
                        true
                    }
                };
                if ready {
                    closed = inbox.take(&self.queue, taken);
                }
                if !taken.is_empty()
                    && taken.len() < self.batch
                    && !closed
                    && !self.linger.is_zero()
                    && !taken.iter().any(|m| matches!(m, Msg::Flush(_)))
                {
                    // A partial batch: let more gather, without being woken by each event,
                    // until a whole batch is in hand (or half the buffer, if that is less) or
                    // a flush waits. Taken every tick meanwhile, so the queue's vector stays
                    // small (see `Inbox`).
                    let until = earliest(Some(Instant::now() + self.linger), deadline)
                        .unwrap_or_else(Instant::now);
                    loop {
                        let now = Instant::now();
                        if closed || now >= until || taken.len() >= self.linger_until_queued {
                            break;
                        }
                        let tick = (now + LINGER_TICK).min(until);
                        let flush = self.flush_requested.notified();
                        if tokio::time::timeout_at(tick, flush).await.is_ok() {
                            break;
                        }
                        closed = inbox.take(&self.queue, taken);
                    }
                    closed = inbox.take(&self.queue, taken);
                }
                batches.note(taken.len());
            }
            // A batch at a time; the queue has room again for what is handed on.
            let n = taken.len().min(self.batch);
            let all_handled = n == taken.len();
            closed &= all_handled;
            let messages = taken.drain(..n);
            let mut flushes = Vec::new();
            for message in messages {
                let event = match message {
                    Msg::Request(event) => event.into_event(),
                    Msg::Event(event) => *event,
                    Msg::Flush(done) => {
                        flushes.push(done);
                        continue;
                    }
                };
                match Folder::folds(&event) {
                    Some(reason) => {
                        self.folded.fetch_add(1, Ordering::Relaxed);
                        if folder.add(&event, reason) == Added::Other {
                            self.folded_other_clients.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => events.push(event),
                }
            }
            self.queue.handled(n);
            // The batch in hand gives the memory of a burst back once the load has fallen for a
            // few batches (the queue's vectors are trimmed by `Inbox::take`).
            if all_handled {
                batches.trim(taken);
            }
            let now = Instant::now();
            // A flush (shutdown) closes the folds early: nothing is left behind. The deadline
            // is checked here, not only by the timeout above: under a steady flood the queue
            // is never empty (or a backlog is in hand), and that timeout would never fire.
            if closed || !flushes.is_empty() || fold_deadline.is_some_and(|at| now >= at) {
                folder.drain_into(events);
                fold_deadline = None;
            } else if fold_deadline.is_none() && !folder.is_empty() {
                fold_deadline = Some(now + self.fold_interval);
            }
            // Events refused by a sink earlier are retried with whatever comes next.
            if !events.is_empty() || retry.iter().any(|pending| !pending.is_empty()) {
                self.write(events, retry, delivered).await;
                flush_deadline.get_or_insert(now + FLUSH_INTERVAL);
            }
            if closed || !flushes.is_empty() || flush_deadline.is_some_and(|at| now >= at) {
                flush_deadline = None;
                if !self.flush_sinks().await {
                    // Try again an interval later (and on the next flush request).
                    flush_deadline = Some(now + FLUSH_INTERVAL);
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closed {
                break;
            }
        }
    }

    /// Calls every sink's [`AuditSink::flush`]; whether all succeeded.
    async fn flush_sinks(&self) -> bool {
        let mut all = true;
        for sink in &self.sinks {
            if let Err(error) = sink.flush().await {
                all = false;
                self.failed_writes.fetch_add(1, Ordering::Relaxed);
                crate::metrics::audit_failed_write();
                tracing::warn!(target: "keygate", %error, "audit sink could not flush; retrying later");
            }
        }
        all
    }

    /// Hands `events` to every sink, each with what it refused before; `delivered` counts the
    /// sinks done with them (written, or kept in their retry buffer) while it runs.
    async fn write(
        &self,
        events: &mut Vec<AuditEvent>,
        retry: &mut [Vec<AuditEvent>],
        delivered: &mut usize,
    ) {
        *delivered = 0;
        for (sink, pending) in self.sinks.iter().zip(retry.iter_mut()) {
            if pending.is_empty() && events.is_empty() {
                // Nothing for this sink (and `delivered` only weighs `events`, empty here).
                continue;
            }
            let result = if pending.is_empty() {
                let result = sink.write(events).await;
                *delivered += 1;
                result
            } else {
                // This sink's copy is in its retry buffer from here on.
                pending.extend(events.iter().cloned());
                *delivered += 1;
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
        *delivered = 0;
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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

    /// A runtime of the test's own (writers outliving or dropped with theirs).
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

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

    /// An auditor on the current runtime.
    fn pipeline(
        sinks: Vec<Arc<dyn AuditSink>>,
        buffer: usize,
        batch: usize,
        linger: Duration,
    ) -> Auditor {
        Auditor::new(
            sinks,
            PipelineConfig {
                buffer,
                batch,
                linger,
                runtime: None,
            },
        )
    }

    fn config(buffer: usize, batch: usize) -> PipelineConfig {
        PipelineConfig {
            buffer,
            batch,
            linger: DEFAULT_LINGER,
            runtime: None,
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
            config(1_000, 64),
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
            config(100_000, 64),
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

    /// Counts what the pipeline does to it: events per write, flushes, and the threads the
    /// writes ran on.
    #[derive(Default)]
    struct Probe {
        written: std::sync::atomic::AtomicUsize,
        writes: std::sync::atomic::AtomicUsize,
        flushes: std::sync::atomic::AtomicUsize,
        threads: Mutex<Vec<Option<String>>>,
    }

    #[async_trait]
    impl AuditSink for Probe {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            self.written.fetch_add(events.len(), Ordering::SeqCst);
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(std::thread::current().name().map(str::to_owned));
            Ok(())
        }

        async fn flush(&self) -> Result<(), AuditError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn allowed() -> AuditEvent {
        AuditEvent::request(SystemTime::UNIX_EPOCH, Outcome::Allowed)
    }

    /// A request's compact event, denied (`stale`: accepted on a stale record, then refused
    /// by a guard).
    fn request_event(status: u16, stale: bool) -> RequestEvent {
        RequestEvent {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            latency: Duration::from_micros(1_234),
            method: http::Method::PATCH,
            route: Some(Arc::from("/orders/{id}")),
            request_id: Some(Arc::from("req-7")),
            client_ip: Some(IpAddr::from([192, 0, 2, 9])),
            key_id: Some("4fT0qKb2mZ9x".parse().unwrap()),
            status,
            outcome: Outcome::Denied,
            reason: Some(Reason::InsufficientScope),
            stale,
        }
    }

    #[test]
    fn a_queued_request_event_takes_at_most_two_thirds_of_an_audit_event() {
        // Every byte a request writes into the queue is read back by the writer's core, so
        // each one costs the request path a cache line's share taken back from it.
        let (queued, event) = (
            std::mem::size_of::<Msg>(),
            std::mem::size_of::<AuditEvent>(),
        );
        assert!(queued <= 128, "a queued message is {queued} bytes");
        assert!(
            queued * 3 <= event * 2,
            "{queued} bytes queued for a {event}-byte event"
        );
    }

    #[tokio::test]
    async fn a_request_event_reaches_the_sinks_whole_and_in_order_among_others() {
        let sink = Arc::new(Collect::default());
        let auditor = pipeline(
            vec![sink.clone() as Arc<dyn AuditSink>],
            100,
            100,
            Duration::ZERO,
        );
        auditor.record(allowed());
        auditor.record_request(request_event(403, false));
        auditor.record_request(request_event(403, true));
        auditor.record(allowed());
        auditor.flush().await;

        let mut expected = AuditEvent::request(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Outcome::Denied,
        )
        .key_id(Some("4fT0qKb2mZ9x".parse().unwrap()))
        .reason(Some(Reason::InsufficientScope));
        expected.method = Some(http::Method::PATCH);
        expected.route = Some(Arc::from("/orders/{id}"));
        expected.request_id = Some(Arc::from("req-7"));
        expected.client_ip = Some(IpAddr::from([192, 0, 2, 9]));
        expected.status = Some(403);
        expected.latency = Some(Duration::from_micros(1_234));
        let mut stale = expected.clone();
        stale.detail = Some(crate::audit::STALE_DETAIL.to_owned());
        assert_eq!(sink.take(), [allowed(), expected, stale, allowed()]);
    }

    fn lingering(sink: &Arc<Probe>, batch: usize, linger: Duration) -> Auditor {
        pipeline(
            vec![sink.clone() as Arc<dyn AuditSink>],
            10_000,
            batch,
            linger,
        )
    }

    /// Waits up to 5 s for `done`.
    async fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    }

    #[tokio::test]
    async fn a_partial_batch_lingers_and_is_written_as_one() {
        let sink = Arc::new(Probe::default());
        // A second: far more than the 50 ms between the first event and the rest, even on a
        // loaded machine.
        let auditor = lingering(&sink, 1_000, Duration::from_secs(1));
        let started = Instant::now();
        auditor.record(allowed());
        // The first event wakes the task; the rest arrive while it lingers.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..99 {
            auditor.record(allowed());
        }
        assert!(eventually(|| sink.written.load(Ordering::SeqCst) == 100).await);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "written before the linger ended: {:?}",
            started.elapsed()
        );
        assert_eq!(sink.writes.load(Ordering::SeqCst), 1, "one batch");
    }

    #[tokio::test]
    async fn a_lingering_writer_takes_what_is_queued_every_tick() {
        let sink = Arc::new(Probe::default());
        let auditor = lingering(&sink, 1_000, Duration::from_secs(3_600));
        auditor.record(allowed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..100 {
            auditor.record(allowed());
        }
        // Taken in hand within a tick or so, long before the linger ends: the vector requests
        // push into only holds what arrived since the last take.
        assert!(eventually(|| auditor.shared.queue.lock().messages.is_empty()).await);
        assert_eq!(
            auditor.shared.queue.lock().in_hand,
            101,
            "what the writer holds still counts against the buffer"
        );
        assert_eq!(sink.written.load(Ordering::SeqCst), 0, "still lingering");
        auditor.flush().await;
        assert_eq!(sink.written.load(Ordering::SeqCst), 101);
        assert_eq!(sink.writes.load(Ordering::SeqCst), 1, "one batch");
        assert_eq!(auditor.shared.queue.lock().in_hand, 0);
    }

    #[tokio::test]
    async fn a_flush_or_a_whole_batch_ends_the_linger() {
        let sink = Arc::new(Probe::default());
        let auditor = lingering(&sink, 50, Duration::from_secs(3_600));
        auditor.record(allowed());
        let flushed = tokio::time::timeout(Duration::from_secs(5), auditor.flush()).await;
        assert!(flushed.is_ok(), "flush waited for the linger");
        assert_eq!(sink.written.load(Ordering::SeqCst), 1);

        auditor.record(allowed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..49 {
            auditor.record(allowed());
        }
        assert!(
            eventually(|| sink.written.load(Ordering::SeqCst) == 51).await,
            "a whole batch waited for an hour's linger: {} written",
            sink.written.load(Ordering::SeqCst)
        );
        assert_eq!(auditor.stats().dropped, 0);
    }

    #[tokio::test]
    async fn a_half_full_buffer_ends_the_linger() {
        let sink = Arc::new(Probe::default());
        let auditor = pipeline(
            vec![sink.clone() as Arc<dyn AuditSink>],
            100,
            10_000,
            Duration::from_secs(3_600),
        );
        auditor.record(allowed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..59 {
            auditor.record(allowed());
        }
        assert!(
            eventually(|| sink.written.load(Ordering::SeqCst) == 60).await,
            "a buffer of 100 waited for a batch of 10 000: {} written",
            sink.written.load(Ordering::SeqCst)
        );
        assert_eq!(auditor.stats().dropped, 0);
    }

    #[tokio::test]
    async fn sinks_are_flushed_after_writes_on_flush_and_at_the_end() {
        let sink = Arc::new(Probe::default());
        let auditor = lingering(&sink, 100, Duration::ZERO);
        auditor.record(allowed());
        // No flush asked for: the interval after the write brings one.
        assert!(eventually(|| sink.flushes.load(Ordering::SeqCst) == 1).await);
        // Nothing written since: no flush the next interval.
        tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(300)).await;
        assert_eq!(sink.flushes.load(Ordering::SeqCst), 1);

        auditor.flush().await;
        assert_eq!(
            sink.flushes.load(Ordering::SeqCst),
            2,
            "flush_audit flushes"
        );

        auditor.record(allowed());
        let shared = Arc::clone(&auditor.shared);
        drop(auditor);
        assert!(
            eventually(|| sink.flushes.load(Ordering::SeqCst) == 3).await,
            "the last handle's drop writes and flushes"
        );
        assert_eq!(sink.written.load(Ordering::SeqCst), 2);
        assert!(
            eventually(|| !shared.running.load(Ordering::Acquire)).await,
            "the writer ends once the auditor is gone"
        );
    }

    /// Holds every write until released, and keeps what it got, write by write.
    struct Gate {
        open: tokio::sync::Semaphore,
        entered: std::sync::atomic::AtomicUsize,
        writes: Mutex<Vec<Vec<u16>>>,
    }

    #[async_trait]
    impl AuditSink for Gate {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            // One permit, one write.
            self.open
                .acquire()
                .await
                .map_err(|e| AuditError(Box::new(e)))?
                .forget();
            self.writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(events.iter().map(|e| e.status.unwrap_or(0)).collect());
            Ok(())
        }
    }

    impl Default for Gate {
        fn default() -> Self {
            Self {
                open: tokio::sync::Semaphore::new(0),
                entered: std::sync::atomic::AtomicUsize::new(0),
                writes: Mutex::new(Vec::new()),
            }
        }
    }

    fn numbered(n: u16) -> AuditEvent {
        let mut event = allowed();
        event.status = Some(n);
        event
    }

    #[tokio::test]
    async fn a_stalled_sink_fills_the_buffer_then_drops_and_counts_and_the_backlog_goes_in_batches()
    {
        let sink = Arc::new(Gate::default());
        let auditor = pipeline(
            vec![sink.clone() as Arc<dyn AuditSink>],
            10,
            4,
            Duration::ZERO,
        );
        auditor.record(numbered(0));
        // The writer takes it and stalls in the sink.
        assert!(eventually(|| sink.entered.load(Ordering::SeqCst) == 1).await);
        for n in 1..=30 {
            auditor.record(numbered(n));
        }
        // The buffer holds 10 while the sink is stalled: the other 20 are dropped, counted.
        let stats = auditor.stats();
        assert_eq!((stats.recorded, stats.dropped), (11, 20));

        // One write goes through: the writer takes the 10 and hands on a batch of 4, and
        // stalls again. The 6 it still holds count against the buffer: 4 more fit.
        sink.open.add_permits(1);
        assert!(
            eventually(|| sink.entered.load(Ordering::SeqCst) == 2).await,
            "entered {} writes: {:?}",
            sink.entered.load(Ordering::SeqCst),
            sink.writes.lock().unwrap_or_else(PoisonError::into_inner)
        );
        for n in 31..=40 {
            auditor.record(numbered(n));
        }
        let stats = auditor.stats();
        assert_eq!((stats.recorded, stats.dropped), (15, 26));

        sink.open.add_permits(1_000);
        let flushed = tokio::time::timeout(Duration::from_secs(5), auditor.flush()).await;
        assert!(flushed.is_ok(), "the flush waited behind a released sink");
        let writes = sink
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(
            writes.iter().all(|w| !w.is_empty() && w.len() <= 4),
            "batches of at most 4: {writes:?}"
        );
        let all: Vec<u16> = writes.concat();
        let kept: Vec<u16> = (0..=10).chain(31..=34).collect();
        assert_eq!(all, kept, "every kept event, in order");
        assert_eq!(auditor.stats().written, 15);

        // Room again: nothing more is dropped.
        for n in 100..110 {
            auditor.record(numbered(n));
        }
        auditor.flush().await;
        assert_eq!(auditor.stats().dropped, 26);
        assert_eq!(auditor.stats().written, 25);
    }

    #[test]
    fn a_vector_is_trimmed_only_above_twice_the_largest_recent_size() {
        let mut recent = Recent::default();
        recent.note(3 * MIN_KEPT_CAPACITY);
        for _ in 1..TAKES_REMEMBERED {
            recent.note(1);
        }
        // The largest of the last sizes decides: twice it is kept, one more is not.
        let room = 3 * MIN_KEPT_CAPACITY;
        let mut vector: Vec<Msg> = Vec::with_capacity(2 * room);
        recent.trim(&mut vector);
        assert_eq!(vector.capacity(), 2 * room, "twice the room is kept");
        let mut vector: Vec<Msg> = Vec::with_capacity(2 * room + 1);
        recent.trim(&mut vector);
        assert_eq!(vector.capacity(), room, "trimmed to the room just above it");
        // Once the large size is forgotten, the room is the least kept.
        recent.note(1);
        let mut vector: Vec<Msg> = Vec::with_capacity(2 * room);
        recent.trim(&mut vector);
        assert_eq!(vector.capacity(), MIN_KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn a_burst_s_memory_is_given_back_when_the_load_falls() {
        let sink = Arc::new(Probe::default());
        let auditor = lingering(&sink, 16_384, Duration::ZERO);
        let queued_room = || auditor.shared.queue.lock().messages.capacity();
        // Recorded with no chance for the writer to run: one take of 10 000.
        for _ in 0..10_000 {
            auditor.record(allowed());
        }
        assert!(queued_room() >= 10_000);
        auditor.flush().await;
        // Each take swaps the vectors, so the burst's vector is back in the queue after every
        // second one. A few small takes after a large one (the end of a backlog, say) do not
        // trim it: under a steady load it would only grow again.
        for _ in 0..3 {
            auditor.record(allowed());
            auditor.flush().await;
        }
        assert!(queued_room() >= 10_000, "trimmed after one small take");
        // After this many, the burst's take is forgotten and the vector trimmed.
        for _ in 3..TAKES_REMEMBERED + 1 {
            auditor.record(allowed());
            auditor.flush().await;
        }
        assert_eq!(
            sink.written.load(Ordering::SeqCst),
            10_000 + TAKES_REMEMBERED + 1
        );
        assert!(
            queued_room() <= 2 * MIN_KEPT_CAPACITY,
            "the buffer kept room for {} events",
            queued_room()
        );
    }

    #[test]
    fn a_writer_dropped_with_its_runtime_leaves_the_whole_buffer_to_the_next() {
        let sink = Arc::new(Gate::default());
        let auditor = pipeline(
            vec![sink.clone() as Arc<dyn AuditSink>],
            10,
            2,
            Duration::ZERO,
        );
        let first = runtime();
        first.block_on(async {
            auditor.record(numbered(0));
            assert!(eventually(|| sink.entered.load(Ordering::SeqCst) == 1).await);
            for n in 1..=6 {
                auditor.record(numbered(n));
            }
            // One write goes through; the writer takes the 6, hands on 2 and stalls again,
            // holding 4.
            sink.open.add_permits(1);
            assert!(eventually(|| sink.entered.load(Ordering::SeqCst) == 2).await);
        });
        drop(first);
        // Those 4 went with the runtime, and so did the 2 being written: all counted as lost,
        // and the next writer has the whole buffer.
        let second = runtime();
        second.block_on(async {
            sink.open.add_permits(1_000);
            for n in 10..20 {
                auditor.record(numbered(n));
            }
            auditor.flush().await;
        });
        let stats = auditor.stats();
        assert_eq!(stats.dropped, 0, "{stats:?}");
        assert_eq!(stats.lost, 6, "{stats:?}");
        assert_eq!(stats.recorded, 17, "{stats:?}");
        assert_eq!(stats.written + stats.lost, stats.recorded, "{stats:?}");
        let writes = sink
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .concat();
        let kept: Vec<u16> = (0..=0).chain(10..20).collect();
        assert_eq!(writes, kept);
    }

    /// A runtime dropped while the second of two sinks is writing: the batch is lost for that
    /// sink only (the first wrote it), and everything still queued for both.
    #[test]
    fn a_batch_cut_off_mid_write_is_lost_only_for_the_sinks_that_lacked_it() {
        let first = Arc::new(Probe::default());
        let second = Arc::new(Gate::default());
        let auditor = pipeline(
            vec![
                first.clone() as Arc<dyn AuditSink>,
                second.clone() as Arc<dyn AuditSink>,
            ],
            100,
            3,
            Duration::ZERO,
        );
        let runtime = runtime();
        runtime.block_on(async {
            for n in 0..3 {
                auditor.record(numbered(n));
            }
            assert!(eventually(|| second.entered.load(Ordering::SeqCst) == 1).await);
            // Queued behind the stalled write: taken by no writer yet.
            for n in 3..5 {
                auditor.record(numbered(n));
            }
        });
        drop(runtime);
        assert_eq!(first.written.load(Ordering::SeqCst), 3);
        let stats = auditor.stats();
        // The 3 being written, for the second sink; the 2 queued are still queued, not lost.
        assert_eq!(stats.lost, 3, "{stats:?}");
        assert_eq!(auditor.shared.queue.lock().in_hand, 0, "room given back");
    }

    /// A runtime dropped while folds are open (their interval has far to run): the denials
    /// they stand for reached no sink, so each counts lost once per sink.
    #[test]
    fn open_folds_of_a_writer_dropped_with_its_runtime_are_lost_once_per_sink() {
        let sinks = [Arc::new(Collect::default()), Arc::new(Collect::default())];
        let auditor = Auditor::folding(
            sinks
                .iter()
                .map(|s| Arc::clone(s) as Arc<dyn AuditSink>)
                .collect(),
            config(100, 8),
            Duration::from_secs(3_600),
            4,
        );
        let runtime = runtime();
        runtime.block_on(async {
            for _ in 0..5 {
                auditor.record(unknown([192, 0, 2, 1]));
            }
            auditor.record(unknown([192, 0, 2, 2]));
            assert!(eventually(|| auditor.stats().folded == 6).await);
        });
        drop(runtime);
        assert!(sinks.iter().all(|s| s.take().is_empty()), "no fold closed");
        let stats = auditor.stats();
        assert_eq!(stats.lost, 12, "6 denials for each of 2 sinks: {stats:?}");
        assert_eq!(auditor.shared.queue.lock().in_hand, 0, "room given back");
    }

    /// Refuses every write.
    struct Refuse;

    #[async_trait]
    impl AuditSink for Refuse {
        async fn write(&self, _: &[AuditEvent]) -> Result<(), AuditError> {
            Err(AuditError(Box::from("refused")))
        }
    }

    #[tokio::test]
    async fn what_a_sink_still_refuses_when_the_writer_ends_is_counted_lost_for_that_sink() {
        let kept = Arc::new(Probe::default());
        let auditor = pipeline(
            vec![
                Arc::new(Refuse) as Arc<dyn AuditSink>,
                kept.clone() as Arc<dyn AuditSink>,
            ],
            100,
            10,
            Duration::ZERO,
        );
        for _ in 0..5 {
            auditor.record(allowed());
        }
        auditor.flush().await;
        let stats = auditor.stats();
        assert_eq!((stats.written, stats.lost), (5, 0), "{stats:?}");
        assert!(stats.failed_writes >= 1, "{stats:?}");
        // Two more, unknown-key denials folded into one event.
        auditor.record(unknown([192, 0, 2, 1]));
        auditor.record(unknown([192, 0, 2, 1]));
        let shared = Arc::clone(&auditor.shared);
        drop(auditor);
        assert!(
            eventually(|| !shared.running.load(Ordering::Acquire)).await,
            "the writer ends once the auditor is gone"
        );
        // The refusing sink never got the 5 nor the 2 folded denials; the other got all.
        assert_eq!(shared.lost.load(Ordering::Relaxed), 7);
        assert_eq!(kept.written.load(Ordering::SeqCst), 6);
        assert_eq!(shared.queue.lock().in_hand, 0);
    }

    #[test]
    fn the_task_runs_on_the_runtime_given() {
        let writer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("audit-writer-test")
            .enable_all()
            .build()
            .unwrap();
        let sink = Arc::new(Probe::default());
        let auditor = Auditor::new(
            vec![sink.clone() as Arc<dyn AuditSink>],
            PipelineConfig {
                buffer: 100,
                batch: 10,
                linger: Duration::ZERO,
                runtime: Some(writer.handle().clone()),
            },
        );
        // Recorded from another runtime (and from no runtime at all).
        auditor.record(allowed());
        let requests = runtime();
        requests.block_on(async {
            auditor.record(allowed());
            auditor.flush().await;
        });
        assert_eq!(sink.written.load(Ordering::SeqCst), 2);
        let threads = sink
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(!threads.is_empty());
        assert!(
            threads
                .iter()
                .all(|t| t.as_deref() == Some("audit-writer-test")),
            "{threads:?}"
        );
    }
}
