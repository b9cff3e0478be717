//! The verifier's side of [cross-instance invalidation](crate::invalidation): a background task
//! holding a [`Subscription`](crate::Subscription), evicting each id it receives, and
//! subscribing again (with backoff) when it breaks.
//!
//! While the task is not subscribed, [`Subscriber::degraded`] is true and the verifier treats
//! cached records older than its degraded TTL as stale. After every (re)subscription the task
//! empties the caches before leaving degraded mode: what was published meanwhile is unknown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::{Inner, Verifier};
use crate::invalidation::{Invalidated, Invalidation};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a changed key may be accepted from the cache, while subscribed and while degraded
/// (see [`Verifier::revocation_bound`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) live: Duration,
    pub(crate) degraded: Duration,
}

impl Bounds {
    /// A live subscription misses a change for at most the channel's liveness bound; then it
    /// is noticed as broken and cached records older than the degraded TTL are re-read. A
    /// record loaded just before the change is therefore re-read after the longer of the two,
    /// and never later than the cache TTL.
    pub(crate) fn new(
        source: &dyn Invalidation,
        cache_ttl: Duration,
        degraded_ttl: Duration,
    ) -> Self {
        Self {
            live: source.liveness_bound().map_or(cache_ttl, |liveness| {
                liveness.max(degraded_ttl).min(cache_ttl)
            }),
            degraded: degraded_ttl,
        }
    }

    fn of(self, live: bool) -> Duration {
        if live { self.live } else { self.degraded }
    }
}

/// Sets the subscription state and its gauges.
fn set_subscribed(flag: &AtomicBool, bounds: Bounds, live: bool) {
    flag.store(live, Ordering::Release);
    crate::metrics::invalidation_subscribed(live);
    crate::metrics::revocation_bound(bounds.of(live));
}

pub(crate) struct Subscriber {
    source: Arc<dyn Invalidation>,
    bounds: Bounds,
    /// Set by the task once subscribed and flushed; cleared when the subscription breaks or the
    /// task ends.
    subscribed: Arc<AtomicBool>,
    /// Whether the task runs (cleared when it ends, e.g. with its runtime): checked without the
    /// lock, since degraded requests call [`Subscriber::ensure_running`] each time.
    alive: Arc<AtomicBool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Dropped with the verifier: tells the task to stop even while it waits for a message.
    _stop: watch::Sender<()>,
    stopped: watch::Receiver<()>,
}

impl Subscriber {
    pub(crate) fn new(source: Arc<dyn Invalidation>, bounds: Bounds) -> Self {
        let (stop, stopped) = watch::channel(());
        crate::metrics::revocation_bound(bounds.degraded);
        Self {
            source,
            bounds,
            subscribed: Arc::new(AtomicBool::new(false)),
            alive: Arc::new(AtomicBool::new(false)),
            task: Mutex::new(None),
            _stop: stop,
            stopped,
        }
    }

    pub(crate) fn source(&self) -> &Arc<dyn Invalidation> {
        &self.source
    }

    /// The revocation bound in the current state.
    pub(crate) fn bound(&self) -> Duration {
        self.bounds.of(!self.degraded())
    }

    /// True while no subscription is known to be live.
    #[inline]
    pub(crate) fn degraded(&self) -> bool {
        !self.subscribed.load(Ordering::Acquire)
    }

    /// Starts the task on the current tokio runtime unless it runs already (called at build
    /// and, while degraded, on requests: a runtime that shut down took the task with it).
    pub(crate) fn ensure_running(&self, inner: Weak<Inner>) {
        if self.alive.load(Ordering::Acquire) {
            return;
        }
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.alive.store(true, Ordering::Release);
        *task = Some(runtime.spawn(run(
            inner,
            Arc::clone(&self.source),
            Unsubscribed {
                subscribed: Arc::clone(&self.subscribed),
                alive: Arc::clone(&self.alive),
                bounds: self.bounds,
            },
            self.stopped.clone(),
        )));
    }
}

/// Clears the subscribed and alive flags however the task ends (including its runtime
/// shutting down).
struct Unsubscribed {
    subscribed: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    bounds: Bounds,
}

impl Drop for Unsubscribed {
    fn drop(&mut self) {
        set_subscribed(&self.subscribed, self.bounds, false);
        self.alive.store(false, Ordering::Release);
    }
}

async fn run(
    inner: Weak<Inner>,
    source: Arc<dyn Invalidation>,
    guard: Unsubscribed,
    mut stopped: watch::Receiver<()>,
) {
    let subscribed = Arc::clone(&guard.subscribed);
    let bounds = guard.bounds;
    let _guard = guard;
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0_u64;
    loop {
        let attempt = tokio::select! {
            attempt = source.subscribe() => attempt,
            _ = stopped.changed() => return,
        };
        let mut subscription = match attempt {
            Ok(subscription) => subscription,
            Err(error) => {
                failures += 1;
                // Warn on the first failure of a streak, then now and then.
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(target: "keygate", %error, failures, "cannot subscribe to key invalidations; cached keys are re-read after the degraded TTL");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        {
            let Some(inner) = inner.upgrade() else { return };
            // Whatever was published while unsubscribed is lost: start from an empty cache.
            Verifier { inner }.invalidate_all();
        }
        set_subscribed(&subscribed, bounds, true);
        if failures > 0 {
            tracing::info!(target: "keygate", "subscribed to key invalidations again; caches emptied");
        }
        failures = 0;
        backoff = FIRST_BACKOFF;
        loop {
            let received = tokio::select! {
                received = subscription.next() => received,
                _ = stopped.changed() => return,
            };
            let what = match received {
                Ok(what) => what,
                Err(error) => {
                    set_subscribed(&subscribed, bounds, false);
                    tracing::warn!(target: "keygate", %error, "key invalidation subscription lost; cached keys are re-read after the degraded TTL until it is back");
                    break;
                }
            };
            let Some(inner) = inner.upgrade() else { return };
            crate::metrics::invalidation_received();
            let verifier = Verifier { inner };
            match what {
                Invalidated::Key(id) => {
                    tracing::trace!(target: "keygate", key_id = %id, "invalidation received");
                    verifier.invalidate(id).await;
                }
                // `Invalidated` is non-exhaustive for other crates; here every other message
                // is as good as "everything".
                Invalidated::All => verifier.invalidate_all(),
            }
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("subscribed", &!self.degraded())
            .finish_non_exhaustive()
    }
}
