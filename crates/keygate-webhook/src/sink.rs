//! [`WebhookSink`]: a bounded queue in front of one delivery task that POSTs signed notices.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keygate::notice::{Notice, NoticeSink, unix_seconds};
use rand::Rng as _;
use reqwest::{StatusCode, Url};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::signature::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSecret};

/// Notices the queue holds by default; more are dropped and counted.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Attempts per notice by default (the first and 7 retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// The wait before the first retry by default; it doubles after each attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// How long one attempt may take by default, connecting and answering.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a [`WebhookSink`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("the webhook URL must be an absolute http or https URL")]
    Url,
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// What a [`WebhookSink`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Notices taken into the queue.
    pub accepted: u64,
    /// Notices the receiver acknowledged (a 2xx answer).
    pub delivered: u64,
    /// Attempts after the first (each a 5xx, 408, 429, timeout or connection failure).
    pub retries: u64,
    /// Notices not queued: the queue was full, or the sink was shut down.
    pub dropped: u64,
    /// Notices given up: attempts exhausted, a 4xx other than 408 and 429, or still
    /// undelivered when [`WebhookSink::shutdown`]'s deadline passed.
    pub failed: u64,
}

impl WebhookStats {
    /// Notices that never reached the receiver: `dropped + failed`.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.dropped + self.failed
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// One notice, serialized once, as every attempt sends it.
struct Queued {
    id: String,
    body: Vec<u8>,
}

/// A [`NoticeSink`] that POSTs each notice as signed JSON to one URL.
///
/// - [`notify`](NoticeSink::notify) serializes the notice and `try_send`s it into a bounded
///   queue ([`capacity`](WebhookSinkBuilder::capacity)); when the queue is full the notice is
///   dropped and counted in [`WebhookStats::dropped`]. It never waits.
/// - One background task delivers the queue in order: each attempt is signed afresh (see
///   `docs/notices.md` and [`WebhookSecret::sign`]); a 2xx is delivered; a 5xx, 408, 429,
///   timeout or connection failure is retried after a backoff that starts at
///   [`initial_backoff`](WebhookSinkBuilder::initial_backoff), doubles per attempt up to
///   [`max_backoff`](WebhookSinkBuilder::max_backoff), and is drawn between half and all of
///   that (jitter), up to [`max_attempts`](WebhookSinkBuilder::max_attempts); other 4xx are
///   not retried. Redirects are not followed. Given-up notices count in [`WebhookStats::failed`].
/// - Delivery is at least once: an attempt whose answer was lost is sent again, with the same
///   [`ID_HEADER`] and payload `id`. Receivers dedup by it.
/// - [`shutdown`](Self::shutdown) stops taking notices and waits (up to a deadline) for the
///   queue to be delivered. Dropping every handle lets the task finish the queue on its own.
///
/// Cheap to clone; clones share the queue.
///
/// ```no_run
/// use std::time::Duration;
/// use keygate::notice::{Notice, NoticeSink};
/// use keygate_webhook::{WebhookSecret, WebhookSink};
///
/// # async fn run(notice: Notice) -> Result<(), Box<dyn std::error::Error>> {
/// let secret = WebhookSecret::new(std::env::var("KEYGATE_WEBHOOK_SECRET")?)?;
/// let sink = WebhookSink::builder("https://hooks.example.com/keygate", secret).build()?;
/// sink.notify(notice); // returns at once
/// // On shutdown:
/// let stats = sink.shutdown(Duration::from_secs(10)).await;
/// assert_eq!(stats.lost(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct WebhookSink {
    inner: Arc<Inner>,
}

struct Inner {
    url: Url,
    queue: mpsc::Sender<Queued>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Configures a [`WebhookSink`] (see [`WebhookSink::builder`]).
#[must_use]
pub struct WebhookSinkBuilder {
    url: String,
    secret: WebhookSecret,
    capacity: usize,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
}

impl WebhookSinkBuilder {
    /// How many notices the queue holds (at least 1); [`DEFAULT_QUEUE_CAPACITY`] by default.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Attempts per notice (at least 1); [`DEFAULT_MAX_ATTEMPTS`] by default.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry; [`DEFAULT_INITIAL_BACKOFF`] by default.
    pub fn initial_backoff(mut self, wait: Duration) -> Self {
        self.initial_backoff = wait;
        self
    }

    /// The longest wait between attempts; [`DEFAULT_MAX_BACKOFF`] by default.
    pub fn max_backoff(mut self, wait: Duration) -> Self {
        self.max_backoff = wait;
        self
    }

    /// How long one attempt may take; [`DEFAULT_TIMEOUT`] by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the sink and starts its delivery task on the current tokio runtime.
    ///
    /// # Errors
    /// [`WebhookError`] for a URL that is not absolute `http(s)`, or a client that cannot be built.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<WebhookSink, WebhookError> {
        let url = Url::parse(&self.url).map_err(|_| WebhookError::Url)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WebhookError::Url);
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookError::Client)?;
        let (queue, receiver) = mpsc::channel(self.capacity);
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let delivery = Delivery {
            client,
            url: url.clone(),
            secret: self.secret,
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(delivery.run(receiver, stopped));
        Ok(WebhookSink {
            inner: Arc::new(Inner {
                url,
                queue,
                counters,
                stop,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

impl fmt::Debug for WebhookSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the origin: a webhook URL's path or query may carry a token of the receiver's.
        let origin = Url::parse(&self.url).map(|url| url.origin().ascii_serialization());
        f.debug_struct("WebhookSinkBuilder")
            .field("origin", &origin.as_deref().unwrap_or("(invalid URL)"))
            .field("capacity", &self.capacity)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Starts configuring a sink that POSTs to `url`, signing with `secret`.
    pub fn builder(url: impl Into<String>, secret: WebhookSecret) -> WebhookSinkBuilder {
        WebhookSinkBuilder {
            url: url.into(),
            secret,
            capacity: DEFAULT_QUEUE_CAPACITY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn stats(&self) -> WebhookStats {
        self.inner.counters.snapshot()
    }

    /// The JSON payload a notice is sent as: `{"id", "type", "created_at", "data"}`, with
    /// `created_at` (Unix seconds) set to `at`.
    #[must_use]
    pub fn payload(notice: &Notice, at: SystemTime) -> serde_json::Value {
        serde_json::json!({
            "id": notice.event_id(),
            "type": notice.kind(),
            "created_at": unix_seconds(at),
            "data": notice.data(),
        })
    }

    /// Stops taking notices (later ones count as dropped), delivers what is queued, and waits
    /// for that up to `deadline`; what is still undelivered then is abandoned and counted in
    /// [`WebhookStats::failed`]. Returns the final counts. Later calls return at once.
    pub async fn shutdown(&self, deadline: Duration) -> WebhookStats {
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(deadline, &mut task).await.is_err()
        {
            task.abort();
            let _ = task.await;
            let c = &self.inner.counters;
            let done = c.delivered.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed);
            let abandoned = c.accepted.load(Ordering::Relaxed).saturating_sub(done);
            c.failed.fetch_add(abandoned, Ordering::Relaxed);
            tracing::warn!(target: "keygate::notice", abandoned, "webhook shutdown deadline passed with notices undelivered");
        }
        self.stats()
    }
}

impl NoticeSink for WebhookSink {
    fn notify(&self, notice: Notice) {
        let counters = &self.inner.counters;
        let payload = Self::payload(&notice, SystemTime::now());
        let Ok(body) = serde_json::to_vec(&payload) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let queued = Queued {
            id: notice.event_id(),
            body,
        };
        if *self.inner.stop.borrow() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.inner.queue.try_send(queued) {
            Ok(()) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "keygate::notice", kind = notice.kind(), "webhook queue full: notice dropped");
            }
        }
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("origin", &self.inner.url.origin().ascii_serialization())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The delivery task's state.
struct Delivery {
    client: reqwest::Client,
    url: Url,
    secret: WebhookSecret,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    counters: Arc<Counters>,
}

enum Outcome {
    Delivered,
    Retry,
    Refused(StatusCode),
}

impl Delivery {
    async fn run(self, mut queue: mpsc::Receiver<Queued>, mut stop: watch::Receiver<bool>) {
        let mut stopping = false;
        loop {
            let next = tokio::select! {
                next = queue.recv() => next,
                _ = stop.changed(), if !stopping => {
                    // Take nothing new; deliver what is queued, then end.
                    stopping = true;
                    queue.close();
                    continue;
                }
            };
            let Some(queued) = next else { break };
            self.deliver(&queued).await;
        }
    }

    async fn deliver(&self, queued: &Queued) {
        for attempt in 1..=self.max_attempts {
            if attempt > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            match self.attempt(queued).await {
                Outcome::Delivered => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Outcome::Refused(status) => {
                    tracing::warn!(target: "keygate::notice", event_id = %queued.id, %status, "webhook receiver refused a notice; not retried");
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Outcome::Retry if attempt < self.max_attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Outcome::Retry => {}
            }
        }
        tracing::warn!(target: "keygate::notice", event_id = %queued.id, attempts = self.max_attempts, "webhook notice given up after its last attempt");
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }

    async fn attempt(&self, queued: &Queued) -> Outcome {
        let timestamp = unix_seconds(SystemTime::now());
        let signature = self.secret.sign(timestamp, &queued.body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, &queued.id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(queued.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Outcome::Delivered,
            Ok(response) => {
                let status = response.status();
                if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    tracing::debug!(target: "keygate::notice", event_id = %queued.id, %status, "webhook attempt failed; will retry");
                    Outcome::Retry
                } else {
                    Outcome::Refused(status)
                }
            }
            Err(error) => {
                tracing::debug!(target: "keygate::notice", event_id = %queued.id, error = %error.without_url(), "webhook attempt failed; will retry");
                Outcome::Retry
            }
        }
    }

    /// The wait after attempt `attempt` (1-based): `initial * 2^(attempt-1)`, capped, then a
    /// random point between half of it and all of it.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=full - half)
    }
}
