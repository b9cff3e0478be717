//! [`RedisInvalidation`]: cross-instance cache invalidation over Redis pub/sub.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use keygate::{Invalidated, Invalidation, InvalidationError, Subscription};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::time::Instant;

use crate::connection::LazyConnection;
use crate::error::within;
use crate::{Error, RedisTarget};

/// Tells every instance which keys changed, over Redis pub/sub: [`publish`](Invalidation::publish)
/// is a `PUBLISH` of the key id (or `*`) on one channel (default `keygate:invalidate`), and each
/// [`subscribe`](Invalidation::subscribe) opens a dedicated pub/sub connection.
///
/// # How fast a broken subscription is noticed
/// - A connection that closes (Redis stopped or restarted, `CLIENT KILL`, a reset) ends the
///   subscription at once: [`Subscription::next`] returns an error as soon as the socket
///   reports it.
/// - A connection that dies silently (a peer or a network path gone without a reset, a hung
///   server) is found by a liveness check: while `next` waits, the subscription sends `PING`
///   on its connection whenever it has received nothing for the
///   [`ping_interval`](RedisInvalidationBuilder::ping_interval) (default 3 s), and fails if the
///   reply takes longer than the [`ping_timeout`](RedisInvalidationBuilder::ping_timeout)
///   (default 1 s). So a dead connection is noticed within **ping interval + ping timeout
///   (4 s by default)**; the verifier then reads records through its degraded TTL until it
///   has subscribed again. That is the channel's
///   [`liveness_bound`](Invalidation::liveness_bound), from which
///   [`Verifier::revocation_bound`](keygate::Verifier::revocation_bound) is computed.
///
/// # While Redis is down
/// Building does not connect, so a service starts while Redis is down. Until Redis answers,
/// [`publish`](Invalidation::publish) and [`subscribe`](Invalidation::subscribe) fail with
/// [`InvalidationError`] within the
/// [`response_timeout`](RedisInvalidationBuilder::response_timeout); the verifier reads
/// records through its degraded TTL and subscribes again with backoff, and the first calls
/// after Redis is up connect.
///
/// Pub/sub delivers at most once: what is published while a subscriber is disconnected is
/// lost to it (see [`keygate::invalidation`] for how the verifier copes).
///
/// [`published_by_store`](Invalidation::published_by_store) is `false`: the key stores do not
/// publish to Redis, so the side making a change publishes after it.
///
/// # Example
/// ```no_run
/// use keygate::{Invalidated, Invalidation, KeyId};
/// use keygate_redis::RedisInvalidation;
///
/// # async fn run(id: KeyId) -> Result<(), Box<dyn std::error::Error>> {
/// let channel = RedisInvalidation::builder("redis://127.0.0.1:6379").build().await?;
/// let mut subscription = channel.subscribe().await?;
/// channel.publish(Invalidated::Key(id)).await?;
/// assert_eq!(subscription.next().await?, Invalidated::Key(id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisInvalidation {
    client: redis::Client,
    publisher: Arc<LazyConnection>,
    channel: String,
    response_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl RedisInvalidation {
    /// Configures a channel on `target`: a URL (`"redis://127.0.0.1:6379"`) or a
    /// [`redis::Client`]. Defaults:
    ///
    /// | setting | default |
    /// | --- | --- |
    /// | [`prefix`](RedisInvalidationBuilder::prefix) / [`channel`](RedisInvalidationBuilder::channel) | `keygate` / `invalidate`: the channel `keygate:invalidate` |
    /// | [`response_timeout`](RedisInvalidationBuilder::response_timeout) | 1 s (publishing, connecting, subscribing) |
    /// | [`ping_interval`](RedisInvalidationBuilder::ping_interval) | 3 s without a message |
    /// | [`ping_timeout`](RedisInvalidationBuilder::ping_timeout) | 1 s |
    pub fn builder(target: impl Into<RedisTarget>) -> RedisInvalidationBuilder {
        RedisInvalidationBuilder {
            target: target.into(),
            prefix: "keygate".to_owned(),
            channel: "invalidate".to_owned(),
            response_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_secs(3),
            ping_timeout: Duration::from_secs(1),
        }
    }

    /// The pub/sub channel: `{prefix}:{channel}`.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl Invalidation for RedisInvalidation {
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
        let mut connection = self.publisher.current();
        let mut command = redis::cmd("PUBLISH");
        command.arg(&self.channel).arg(what.to_message());
        let published = within::<i64>(
            self.response_timeout,
            command.query_async(&mut connection.manager),
        )
        .await;
        self.publisher
            .settle(&connection, published)
            .map(drop)
            .map_err(InvalidationError::new)
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
        let pubsub = within(self.response_timeout, self.client.get_async_pubsub())
            .await
            .map_err(InvalidationError::new)?;
        let (mut sink, stream) = pubsub.split();
        within(self.response_timeout, sink.subscribe(&self.channel))
            .await
            .map_err(InvalidationError::new)?;
        Ok(Box::new(RedisSubscription {
            sink,
            stream,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            quiet_until: Instant::now() + self.ping_interval,
        }))
    }

    /// Ping interval + ping timeout: the longest a silently dead subscription goes unnoticed.
    fn liveness_bound(&self) -> Option<Duration> {
        Some(self.ping_interval + self.ping_timeout)
    }
}

impl std::fmt::Debug for RedisInvalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInvalidation")
            .field("channel", &self.channel)
            .field("response_timeout", &self.response_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .finish_non_exhaustive()
    }
}

/// One subscriber's dedicated pub/sub connection.
struct RedisSubscription {
    sink: PubSubSink,
    stream: PubSubStream,
    ping_interval: Duration,
    ping_timeout: Duration,
    /// When to check the connection if nothing arrives before.
    quiet_until: Instant,
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Result<Invalidated, InvalidationError> {
        loop {
            tokio::select! {
                message = self.stream.next() => {
                    let Some(message) = message else {
                        return Err(InvalidationError::new(Error::Closed));
                    };
                    self.quiet_until = Instant::now() + self.ping_interval;
                    return Ok(message_payload(message.get_payload_bytes()));
                }
                () = tokio::time::sleep_until(self.quiet_until) => {
                    within::<redis::Value>(self.ping_timeout, self.sink.ping())
                        .await
                        .map_err(InvalidationError::new)?;
                    self.quiet_until = Instant::now() + self.ping_interval;
                }
            }
        }
    }
}

/// What a received pub/sub payload invalidates. Not UTF-8 reads as "anything changed", like
/// any unknown message.
pub fn message_payload(payload: &[u8]) -> Invalidated {
    Invalidated::from_message(std::str::from_utf8(payload).unwrap_or(""))
}

/// Configures a [`RedisInvalidation`]; see [`RedisInvalidation::builder`] for the defaults.
#[derive(Debug)]
#[must_use]
pub struct RedisInvalidationBuilder {
    target: RedisTarget,
    prefix: String,
    channel: String,
    response_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl RedisInvalidationBuilder {
    /// The first part of the channel name (default `keygate`). Use the same prefix as the
    /// [`RedisRateLimiter`](crate::RedisRateLimiter)'s, one per deployment sharing a Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The channel's name under the prefix (default `invalidate`): `{prefix}:{channel}`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Longest wait for publishing, connecting or subscribing (default 1 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a subscription waits without a message before it checks its connection with
    /// a `PING` (default 3 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long the `PING` reply may take before the subscription counts its connection as
    /// dead (default 1 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Builds the channel without connecting: a service starts while Redis is down. Until
    /// Redis answers, [`publish`](Invalidation::publish) and
    /// [`subscribe`](Invalidation::subscribe) fail with [`InvalidationError`] after at most the
    /// response timeout (the verifier runs degraded and subscribes again with backoff); the
    /// first call after Redis is up connects. Publishing shares one connection, made on the
    /// first publish; each subscription opens its own.
    ///
    /// Async so that it runs inside the Tokio runtime the publishing connection needs.
    ///
    /// # Errors
    /// [`Error::Redis`] when the URL is invalid (not when Redis is unreachable).
    pub async fn build(self) -> Result<RedisInvalidation, Error> {
        let client = self.target.client()?;
        let publisher = Arc::new(LazyConnection::new(
            client.clone(),
            self.response_timeout,
            self.response_timeout,
        )?);
        Ok(RedisInvalidation {
            client,
            publisher,
            channel: format!("{}:{}", self.prefix, self.channel),
            response_timeout: self.response_timeout,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
        })
    }
}
