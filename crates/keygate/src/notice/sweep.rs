//! [`ExpiringSweep`]: finds active keys expiring within a window and notices each once per
//! expiry time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Notice, NoticeKey, NoticeSink};
use crate::clock::{Clock, SystemClock};
use crate::key::KeyId;
use crate::record::KeyState;
use crate::store::{KeyAdmin, KeyFilter, PageRequest, StoreError};

/// How often a spawned sweep runs by default: every hour.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Sends [`Notice::ExpiringSoon`] for every active key whose expiry falls within `window` of
/// now: once per key and expiry time.
///
/// - [`run_once`](Self::run_once) does one pass: it pages through the store's active keys
///   ([`KeyAdmin::list`] with [`KeyState::Active`], [`PageRequest::MAX_LIMIT`] a page) and
///   notices the keys with `now < expires_at <= now + window` it has not noticed with that
///   expiry. A key whose expiry is changed later is noticed again (a new occasion, a new
///   [`Notice::event_id`]).
/// - [`spawn`](Self::spawn) runs a pass at once and then every [`interval`](Self::interval) on
///   the current tokio runtime, until the [`SweepHandle`] is stopped or dropped.
///
/// What was noticed is remembered in memory only, and only for keys still in the window: a
/// restarted process (or a second instance) notices the keys in the window again, with the same
/// event ids, so receivers can drop the repeats. A pass reads every active key, so choose the
/// interval with the store's size in mind (an hour is the default).
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use keygate::clock::{Clock, ManualClock};
/// use keygate::notice::{ExpiringSweep, MemoryNotices};
/// use keygate::{Admin, Keyring, MemoryStore, NewKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
/// let store = MemoryStore::with_clock(clock.clone());
/// let admin = Admin::builder(store.clone()).keyring(Keyring::development("acme")?).build();
/// let in_3_days = clock.now() + Duration::from_secs(3 * 86_400);
/// admin.create_key(NewKey::new("ci").expires_at(in_3_days)).await?;
///
/// let notices = MemoryNotices::new();
/// let mut sweep = ExpiringSweep::new(Arc::new(store), notices.clone(), Duration::from_secs(7 * 86_400))
///     .clock(clock);
/// assert_eq!(sweep.run_once().await?, 1);
/// assert_eq!(sweep.run_once().await?, 0); // once per key per expiry
/// assert_eq!(notices.all().len(), 1);
/// # Ok(())
/// # }
/// ```
pub struct ExpiringSweep {
    admin: Arc<dyn KeyAdmin>,
    sink: Arc<dyn NoticeSink>,
    window: Duration,
    interval: Duration,
    clock: Arc<dyn Clock>,
    /// The expiry each key in the window was noticed with.
    noticed: HashMap<KeyId, SystemTime>,
}

impl ExpiringSweep {
    /// A sweep over `admin`'s keys, sending to `sink` the keys expiring within `window`. The
    /// system clock and [`DEFAULT_SWEEP_INTERVAL`] until set.
    #[must_use]
    pub fn new(admin: Arc<dyn KeyAdmin>, sink: impl NoticeSink, window: Duration) -> Self {
        Self {
            admin,
            sink: Arc::new(sink),
            window,
            interval: DEFAULT_SWEEP_INTERVAL,
            clock: Arc::new(SystemClock),
            noticed: HashMap::new(),
        }
    }

    /// The clock that says what "now" is (a [`ManualClock`](crate::clock::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How long a spawned sweep waits between passes.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// One pass; returns how many notices it sent.
    ///
    /// # Errors
    /// [`StoreError`] when the store does not answer; nothing is forgotten, and the next pass
    /// picks up where this one could not.
    pub async fn run_once(&mut self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let end = now + self.window;
        let filter = KeyFilter {
            state: Some(KeyState::Active),
            ..KeyFilter::default()
        };
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let mut in_window = HashMap::new();
        let mut sent = 0;
        loop {
            let got = self.admin.list(&filter, page).await?;
            for record in &got.keys {
                let Some(expires_at) = record.expires_at else {
                    continue;
                };
                if record.state(now) != KeyState::Active || expires_at > end {
                    continue;
                }
                in_window.insert(record.id, expires_at);
                if self.noticed.get(&record.id) != Some(&expires_at) {
                    self.noticed.insert(record.id, expires_at);
                    self.sink.notify(Notice::ExpiringSoon {
                        key: NoticeKey::from(record),
                        expires_at,
                    });
                    sent += 1;
                }
            }
            match got.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        // Forget keys that left the window (expired, revoked, extended): memory stays bounded
        // by the keys in the window.
        self.noticed = in_window;
        Ok(sent)
    }

    /// Runs a pass now and then every interval on the current tokio runtime. A pass that fails
    /// is logged (target `keygate::notice`) and tried again at the next tick.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use = "dropping the handle stops the sweep"]
    pub fn spawn(mut self) -> SweepHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                if let Err(error) = self.run_once().await {
                    tracing::warn!(target: "keygate::notice", %error, "the expiring-soon sweep could not read the key store");
                }
            }
        });
        SweepHandle { stop, task }
    }
}

impl fmt::Debug for ExpiringSweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiringSweep")
            .field("window", &self.window)
            .field("interval", &self.interval)
            .field("sink", &self.sink)
            .field("noticed", &self.noticed.len())
            .finish_non_exhaustive()
    }
}

/// A running [`ExpiringSweep`]. Dropping it stops the sweep after its current pass.
#[derive(Debug)]
pub struct SweepHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SweepHandle {
    /// Stops the sweep and waits for its current pass to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::notice::MemoryNotices;
    use crate::{Admin, Keyring, MemoryStore, NewKey};

    const DAY: Duration = Duration::from_secs(86_400);

    struct Setup {
        clock: ManualClock,
        store: MemoryStore,
        admin: Admin,
        notices: MemoryNotices,
    }

    fn setup() -> Setup {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let store = MemoryStore::with_clock(clock.clone());
        let admin = Admin::builder(store.clone())
            .keyring(Keyring::development("acme").unwrap())
            .clock(clock.clone())
            .build();
        Setup {
            clock,
            store,
            admin,
            notices: MemoryNotices::new(),
        }
    }

    impl Setup {
        fn sweep(&self) -> ExpiringSweep {
            ExpiringSweep::new(Arc::new(self.store.clone()), self.notices.clone(), 7 * DAY)
                .clock(self.clock.clone())
        }

        async fn key(&self, name: &str, expires_in: Option<Duration>) -> KeyId {
            let mut new = NewKey::new(name).owner("team-ci");
            if let Some(d) = expires_in {
                new = new.expires_at(self.clock.now() + d);
            }
            self.admin.create_key(new).await.unwrap().record.id
        }

        fn noticed(&self) -> Vec<(KeyId, SystemTime)> {
            self.notices
                .all()
                .into_iter()
                .map(|n| match n {
                    Notice::ExpiringSoon { key, expires_at } => (key.id, expires_at),
                    other => panic!("unexpected notice {other:?}"),
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn fires_once_per_key_per_expiry_within_the_window() {
        let s = setup();
        let soon = s.key("soon", Some(3 * DAY)).await;
        let later = s.key("later", Some(30 * DAY)).await;
        let _never = s.key("never", None).await;
        let revoked = s.key("revoked", Some(DAY)).await;
        s.admin.revoke(&revoked).await.unwrap();
        let mut sweep = s.sweep();

        assert_eq!(sweep.run_once().await.unwrap(), 1);
        assert_eq!(sweep.run_once().await.unwrap(), 0);
        let first = s.noticed();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, soon);
        let notice = &s.notices.all()[0];
        assert_eq!(notice.key().name, "soon");
        assert_eq!(notice.key().owner.as_deref(), Some("team-ci"));

        // Time passes: `later` enters the window, `soon` is noticed no second time.
        s.clock.advance(24 * DAY);
        assert_eq!(sweep.run_once().await.unwrap(), 1);
        assert_eq!(s.noticed()[1].0, later);

        // A changed expiry is a new occasion with a new event id.
        let extended = s.clock.now() + 2 * DAY;
        s.admin.set_expiry(&later, Some(extended)).await.unwrap();
        assert_eq!(sweep.run_once().await.unwrap(), 1);
        assert_eq!(s.noticed()[2], (later, extended));
        let ids: Vec<String> = s.notices.all().iter().map(Notice::event_id).collect();
        assert_ne!(ids[1], ids[2]);

        // A restarted sweep forgets and sends again, with the same event ids.
        let mut restarted = s.sweep();
        assert_eq!(restarted.run_once().await.unwrap(), 1);
        assert_eq!(s.notices.all()[3].event_id(), ids[2]);
    }

    #[tokio::test]
    async fn pages_through_every_active_key() {
        let s = setup();
        for i in 0..(PageRequest::MAX_LIMIT + 5) {
            s.key(&format!("k{i}"), Some(DAY)).await;
        }
        let mut sweep = s.sweep();
        assert_eq!(sweep.run_once().await.unwrap(), PageRequest::MAX_LIMIT + 5);
        assert_eq!(sweep.run_once().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_spawned_sweep_runs_until_stopped() {
        let s = setup();
        s.key("soon", Some(DAY)).await;
        let handle = s.sweep().interval(Duration::from_millis(5)).spawn();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while s.notices.all().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Several passes ran by now; still one notice.
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.stop().await;
        assert_eq!(s.notices.all().len(), 1);
        s.key("after", Some(DAY)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(s.notices.all().len(), 1, "no pass after stop");
    }
}
