//! The sweeps: [`ExpiringSweep`] finds active keys expiring within a window and notices each
//! once per expiry time; [`IdleSweep`] disables the keys idle for longer than the lifetime
//! policy allows. Both page through the active keys ([`ActiveKeys`]) and run on a timer
//! ([`spawn_sweep`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Notice, NoticeKey, NoticeSink};
use crate::clock::{Clock, SystemClock};
use crate::key::KeyId;
use crate::record::{KeyChange, KeyRecord, KeyState};
use crate::store::{KeyAdmin, KeyFilter, PageRequest, StoreError};
use crate::verifier::Admin;

/// The store's active keys, a page ([`PageRequest::MAX_LIMIT`] keys) at a time.
struct ActiveKeys<'a> {
    admin: &'a dyn KeyAdmin,
    filter: KeyFilter,
    page: Option<PageRequest>,
}

impl<'a> ActiveKeys<'a> {
    fn new(admin: &'a dyn KeyAdmin) -> Self {
        Self {
            admin,
            filter: KeyFilter {
                state: Some(KeyState::Active),
                ..KeyFilter::default()
            },
            page: Some(PageRequest::first(PageRequest::MAX_LIMIT)),
        }
    }

    /// The next page; `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<KeyRecord>>, StoreError> {
        let Some(page) = self.page else {
            return Ok(None);
        };
        let got = self.admin.list(&self.filter, page).await?;
        self.page = got.next.map(|next| PageRequest {
            after: Some(next),
            ..page
        });
        Ok(Some(got.keys))
    }
}

/// A sweep run by [`spawn_sweep`]: one pass at a time.
trait Sweep: Send + 'static {
    /// What the sweep is, for its log lines.
    const NAME: &'static str;
    /// How long to wait between passes.
    fn every(&self) -> Duration;
    /// One pass.
    fn pass(&mut self) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Runs a pass of `sweep` now and then every interval on the current tokio runtime, until the
/// handle is stopped or dropped. A pass that fails is logged (target `keygate::notice`) and
/// tried again at the next tick.
fn spawn_sweep<S: Sweep>(mut sweep: S) -> SweepHandle {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(sweep.every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.changed() => break,
            }
            if let Err(error) = sweep.pass().await {
                tracing::warn!(target: "keygate::notice", %error, sweep = S::NAME, "a sweep could not read or change the key store");
            }
        }
    });
    SweepHandle { stop, task }
}

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
        let mut keys = ActiveKeys::new(&*self.admin);
        let mut in_window = HashMap::new();
        let mut sent = 0;
        while let Some(page) = keys.next().await? {
            for record in &page {
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
    pub fn spawn(self) -> SweepHandle {
        spawn_sweep(self)
    }
}

impl Sweep for ExpiringSweep {
    const NAME: &'static str = "expiring-soon";

    fn every(&self) -> Duration {
        self.interval
    }

    fn pass(&mut self) -> impl Future<Output = Result<usize, StoreError>> + Send {
        self.run_once()
    }
}

/// Disables the keys idle for longer than the deployment's
/// [lifetime policy](crate::policy) allows (`max_idle`), through an [`Admin`] (so each is
/// audited, with the reason, and the change is published to every service), and sends
/// [`Notice::IdleDisabled`] for each.
///
/// A key is idle since the latest of its last use ([`KeyRecord::last_used_at`]), its creation
/// and its last management change (`updated_at`: a key enabled again after an idle sweep
/// disabled it gets a full `max_idle` more). Canary keys are never idle-disabled: they are
/// never supposed to be used. The policy is read from the store at each pass, so
/// setting or changing `max_idle` takes effect at the next pass; without it a pass does
/// nothing.
///
/// The audit event of each disable is a `disabled` event whose detail starts with `idle:`
/// (`idle: unused since Unix time 1800000000, longer than the lifetime policy's max_idle of
/// 30 days`). Last-used times reach the store write-behind (the verifier's flush interval,
/// seconds), so `max_idle` should be far longer than that.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use keygate::clock::{Clock, ManualClock};
/// use keygate::notice::{IdleSweep, MemoryNotices};
/// use keygate::policy::{LifetimePolicy, write_policy};
/// use keygate::{Admin, Keyring, MemoryStore, NewKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let day = Duration::from_secs(86_400);
/// let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
/// let store = MemoryStore::with_clock(clock.clone());
/// let admin = Admin::builder(store.clone())
///     .keyring(Keyring::development("acme")?)
///     .clock(clock.clone())
///     .build();
/// write_policy(&store, &LifetimePolicy { max_idle: Some(30 * day), ..LifetimePolicy::default() }).await?;
/// admin.create_key(NewKey::new("forgotten")).await?;
///
/// let notices = MemoryNotices::new();
/// let mut sweep = IdleSweep::new(admin, notices.clone()).clock(clock.clone());
/// assert_eq!(sweep.run_once().await?, 0);
/// clock.advance(31 * day);
/// assert_eq!(sweep.run_once().await?, 1); // disabled, audited, noticed
/// assert_eq!(sweep.run_once().await?, 0);
/// assert_eq!(notices.all()[0].kind(), "key.idle_disabled");
/// # Ok(())
/// # }
/// ```
pub struct IdleSweep {
    admin: Admin,
    sink: Arc<dyn NoticeSink>,
    interval: Duration,
    clock: Arc<dyn Clock>,
}

impl IdleSweep {
    /// A sweep over `admin`'s keys, sending its notices to `sink`. The system clock and
    /// [`DEFAULT_SWEEP_INTERVAL`] until set.
    #[must_use]
    pub fn new(admin: Admin, sink: impl NoticeSink) -> Self {
        Self {
            admin,
            sink: Arc::new(sink),
            interval: DEFAULT_SWEEP_INTERVAL,
            clock: Arc::new(SystemClock),
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

    /// One pass; returns how many keys it disabled (and noticed).
    ///
    /// # Errors
    /// [`StoreError`] when the store does not answer (or the recorded policy is unreadable);
    /// the keys disabled before stay disabled and noticed, the next pass does the rest.
    pub async fn run_once(&mut self) -> Result<usize, StoreError> {
        let policy = self.admin.lifetime_policy().await?;
        let Some(max_idle) = policy.max_idle else {
            return Ok(0);
        };
        let now = self.clock.now();
        let mut idle = Vec::new();
        let mut keys = ActiveKeys::new(&self.admin);
        while let Some(page) = keys.next().await? {
            for record in page {
                let since = record.updated_at.max(record.created_at);
                if !record.canary
                    && record.state(now) == KeyState::Active
                    && policy.is_idle(since, record.last_used_at, now)
                {
                    let idle_since = record.last_used_at.map_or(since, |used| used.max(since));
                    idle.push((record, idle_since));
                }
            }
        }
        let mut disabled = 0;
        for (record, idle_since) in idle {
            let detail = format!(
                "idle: unused since Unix time {}, longer than the lifetime policy's max_idle of {}",
                super::unix_seconds(idle_since),
                crate::policy::Days(max_idle),
            );
            match self
                .admin
                .apply_with_detail(&record.id, KeyChange::Disable, detail)
                .await
            {
                Ok(_) => {}
                // Changed meanwhile (revoked, deleted): nothing to disable.
                Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(error),
            }
            self.sink.notify(Notice::IdleDisabled {
                key: NoticeKey::from(&record),
                idle_since,
            });
            disabled += 1;
        }
        Ok(disabled)
    }

    /// Runs a pass now and then every interval on the current tokio runtime. A pass that fails
    /// is logged (target `keygate::notice`) and tried again at the next tick.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use = "dropping the handle stops the sweep"]
    pub fn spawn(self) -> SweepHandle {
        spawn_sweep(self)
    }
}

impl Sweep for IdleSweep {
    const NAME: &'static str = "idle";

    fn every(&self) -> Duration {
        self.interval
    }

    fn pass(&mut self) -> impl Future<Output = Result<usize, StoreError>> + Send {
        self.run_once()
    }
}

impl fmt::Debug for IdleSweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleSweep")
            .field("interval", &self.interval)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
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

    /// A store, an admin auditing to a memory trail, and a policy of 30 days' idle time.
    async fn idle_setup() -> (Setup, crate::audit::MemoryAuditTrail) {
        let s = setup();
        let trail = crate::audit::MemoryAuditTrail::new();
        let admin = Admin::builder(s.store.clone())
            .keyring(Keyring::development("acme").unwrap())
            .clock(s.clock.clone())
            .audit_sink(trail.clone())
            .build()
            .actor("idle-sweep-test");
        crate::policy::write_policy(
            &s.store,
            &crate::policy::LifetimePolicy {
                max_idle: Some(30 * DAY),
                ..crate::policy::LifetimePolicy::default()
            },
        )
        .await
        .unwrap();
        (Setup { admin, ..s }, trail)
    }

    #[tokio::test]
    async fn idle_keys_are_disabled_audited_and_noticed_once() {
        use crate::KeyStore as _;
        use crate::audit::{Action, AuditTrail as _, EventQuery};

        let (s, trail) = idle_setup().await;
        let unused = s.key("unused", None).await;
        let used = s.key("used", None).await;
        let canary = s
            .admin
            .create_key(NewKey::new("decoy").canary())
            .await
            .unwrap()
            .record
            .id;
        let revoked = s.key("revoked", None).await;
        s.admin.revoke(&revoked).await.unwrap();
        let mut sweep = IdleSweep::new(s.admin.clone(), s.notices.clone()).clock(s.clock.clone());
        assert_eq!(sweep.run_once().await.unwrap(), 0, "nothing idle yet");

        // 20 days on, `used` is used; 11 days later `unused` (31 days) is idle, `used` (11) not.
        s.clock.advance(20 * DAY);
        s.store
            .record_last_used(&[(used, s.clock.now())])
            .await
            .unwrap();
        s.clock.advance(11 * DAY);
        assert_eq!(sweep.run_once().await.unwrap(), 1);
        assert_eq!(
            sweep.run_once().await.unwrap(),
            0,
            "once per key per occasion"
        );
        assert_eq!(
            s.store.get(&unused).await.unwrap().state(s.clock.now()),
            KeyState::Disabled
        );
        for id in [used, canary] {
            assert_eq!(
                s.store.get(&id).await.unwrap().disabled_at,
                None,
                "{id}: a used key and a canary stay as they are"
            );
        }
        let notices = s.notices.all();
        assert_eq!(notices.len(), 1);
        let created_at = s.store.get(&unused).await.unwrap().created_at;
        assert_eq!(
            notices[0],
            Notice::IdleDisabled {
                key: NoticeKey::new(unused, "unused", Some("team-ci".into())),
                idle_since: created_at,
            }
        );
        // Audited as a disable by the admin's actor, with the reason.
        s.admin.flush_audit().await;
        let events = trail
            .events(&EventQuery {
                key_id: Some(unused),
                action: Some(Action::Disabled),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let detail = events[0].event.detail.clone().unwrap_or_default();
        assert!(detail.starts_with("idle:"), "{detail}");
        assert!(detail.contains("30 days"), "{detail}");
        assert_eq!(events[0].event.actor.as_deref(), Some("idle-sweep-test"));

        // Enabled again: a full max_idle more before the next disable, a new occasion then.
        s.admin.enable(&unused).await.unwrap();
        s.clock.advance(29 * DAY);
        assert_eq!(sweep.run_once().await.unwrap(), 1, "`used` is idle now");
        s.clock.advance(2 * DAY);
        assert_eq!(sweep.run_once().await.unwrap(), 1, "`unused` again");
        let notices = s.notices.all();
        assert_eq!(notices.len(), 3);
        assert_eq!(notices[2].key().id, unused);
        assert_ne!(notices[2].event_id(), notices[0].event_id());
    }

    #[tokio::test]
    async fn without_max_idle_the_idle_sweep_does_nothing() {
        let s = setup();
        s.key("old", None).await;
        s.clock.advance(10_000 * DAY);
        let mut sweep = IdleSweep::new(s.admin.clone(), s.notices.clone()).clock(s.clock.clone());
        assert_eq!(sweep.run_once().await.unwrap(), 0);
        assert!(s.notices.all().is_empty());
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
