//! [`RedisQuotaMeter`]: quota counters in Redis, shared exactly by every instance.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keygate::quota::{
    CounterKind, CounterState, MAX_GRANTED, MAX_LINES, MAX_QUOTA, MeterError, Quota, QuotaDecision,
    QuotaLine, QuotaMeter, QuotaSubject, QuotaUsage,
};

use crate::connection::LazyConnection;
use crate::error::within;
use crate::{Error, RedisTarget};

/// How long a period's counter outlives its window in Redis: instances whose clocks lag
/// behind still find it while they are in the window.
pub const PERIOD_KEY_MARGIN: Duration = Duration::from_secs(3_600);

/// Brings every line's counter up to date, then charges (`ARGV[1]` = `c`: spends `cost` from
/// every line if each has that much left, else from none) or refunds (`r`: gives `cost` back to
/// each line still in the window it was charged in). One call, atomic: no other client's
/// command runs in between.
///
/// `KEYS[i]`: line `i`'s counter, the string `kind:window:value`, or `kind:window:value:granted`
/// once a top-up has been counted. `ARGV[2]`: the cost. Then eight per line, from
/// `ARGV[3 + 8 (i − 1)]`: the counter kind (`day`, `credits`, …); the window `now` falls in
/// (`Quota::window_at`, computed by the caller); `p` for a period or `c` for credits; the
/// period's limit or the credits' starting balance; the refill amount (0: no refill); the key's
/// time to live in ms (0: never expires); the window the refunded charge was made in (refunds
/// only); the credits operators have added to the subject in all (`QuotaLine::granted`).
///
/// Up to date means what `Quota::current` does: a period's count restarts at 0 in a new
/// window; credits start at their balance, and a new refill window raises the balance to the
/// refill amount (keeping a higher one); a counter of another kind counts as none. One rule
/// more, for clocks that disagree: a counter already in a later window than the caller's is
/// left in it (never moved back, which would grant that window's quota again). Then, as
/// `Quota::with_granted`: a granted total above the counter's adds the difference to a credit
/// balance, once (the total the counter has counted is kept across kind changes).
///
/// Replies `{spent, window_1, value_1, window_2, value_2, …}`: whether the charge spent (always
/// 0 for a refund), and each line's up-to-date state *before* the charge, from which the
/// caller computes the decision with `QuotaDecision::charge`, the one place the rule lives in
/// Rust. Numbers stay integers below 2^53 (windows, at most 10^12 units), so Lua's doubles are
/// exact; values are written with `%.0f` (never in exponent form).
pub(crate) const SCRIPT: &str = r"
local max_balance = 1001000000000000
local cost = tonumber(ARGV[2])
local lines = {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 8
  local l = {
    kind = ARGV[b + 1], window = tonumber(ARGV[b + 2]), credits = ARGV[b + 3] == 'c',
    size = tonumber(ARGV[b + 4]), refill = tonumber(ARGV[b + 5]), ttl = tonumber(ARGV[b + 6]),
    charged = tonumber(ARGV[b + 7]), granted = tonumber(ARGV[b + 8]), g = 0,
  }
  local raw = redis.call('GET', KEYS[i])
  local kind, window, value
  if raw then
    local g
    kind, window, value, g = string.match(raw, '^([a-z]+):(%d+):(%d+):?(%d*)$')
    if not kind then
      return redis.error_reply('keygate: unreadable quota counter at ' .. KEYS[i])
    end
    window = tonumber(window)
    value = tonumber(value)
    l.g = tonumber(g) or 0
  end
  l.found = kind == l.kind
  if l.found and window > l.window then
    -- Written by an instance whose clock is ahead: keep the later window.
  elseif l.credits then
    if not l.found then
      window, value = l.window, l.size
    elseif l.refill > 0 and window ~= l.window then
      if value < l.refill then value = l.refill end
      window = l.window
    end
  elseif not l.found or window ~= l.window then
    window, value = l.window, 0
  end
  if l.granted > l.g then
    if l.credits then
      value = math.min(value + (l.granted - l.g), max_balance)
    end
    l.g = l.granted
  end
  l.w, l.v = window, value
  lines[i] = l
end

local function save(i, value)
  local l = lines[i]
  local text = l.kind .. ':' .. string.format('%.0f', l.w) .. ':' .. string.format('%.0f', value)
  if l.g > 0 then
    -- Only once a top-up was counted: counters without one keep the older format.
    text = text .. ':' .. string.format('%.0f', l.g)
  end
  if l.ttl > 0 then
    redis.call('SET', KEYS[i], text, 'PX', l.ttl)
  else
    redis.call('SET', KEYS[i], text)
  end
end

local reply = {0}
if ARGV[1] == 'c' then
  local enough = true
  for i, l in ipairs(lines) do
    local left = l.v
    if not l.credits then
      left = l.size - l.v
      if left < 0 then left = 0 end
    end
    if left < cost then enough = false end
    reply[2 * i] = l.w
    reply[2 * i + 1] = l.v
  end
  if enough then
    reply[1] = 1
    for i, l in ipairs(lines) do
      if l.credits then save(i, l.v - cost) else save(i, l.v + cost) end
    end
  end
elseif ARGV[1] == 'r' then
  for i, l in ipairs(lines) do
    if l.found and l.w == l.charged then
      if l.credits then
        save(i, math.min(l.v + cost, max_balance))
      else
        save(i, math.max(l.v - cost, 0))
      end
    end
  end
end
return reply
";

/// Quota counters kept in Redis, so that every instance of a service spends from one balance
/// per key and per owner, exactly: no instance can grant what another already granted.
///
/// - **One round trip per charge**: one Lua script (`EVALSHA`) brings every line's counter up
///   to date (a new day or month starts at 0, a refill raises a credit balance), checks that
///   every line has the cost left, and spends it from all of them or from none, atomically.
///   The decision ([`QuotaDecision`]) is then computed from the states the script returns by
///   [`QuotaDecision::charge`], the same code the in-process meter decides with.
/// - **Windows on the caller's clock**: the window of each line is computed from the `now`
///   the verifier passes (its clock), as for the in-process meter, so UTC periods begin at
///   the same instant everywhere clocks agree. A counter already moved to a later window by an
///   instance whose clock runs ahead is never moved back.
/// - **Keys**: `{prefix}:quota:key:{id}` (a key's lineage: rotations keep it) and
///   `{prefix}:quota:owner:{owner tag}`, each a string `kind:window:value` (with `:granted`
///   appended once an operator's top-up has been counted, [`QuotaLine::granted`]). A period's
///   counter expires [`PERIOD_KEY_MARGIN`] after its window ends (it would restart at 0 then
///   anyway); a credit balance never expires (it is the balance). A charge with a key and an owner line
///   touches two keys, so on Redis Cluster both must hash to one slot: use a single Redis (or
///   primary with replicas), as for the rest of keygate's Redis use.
/// - **Refunds** ([`refund`](QuotaMeter::refund)) are one round trip, and give back only to a
///   line still in the window the charge was made in. [`usage`](QuotaMeter::usage) reads one
///   key and spends nothing.
/// - **When Redis cannot be asked** (down, slow beyond
///   [`response_timeout`](RedisQuotaMeterBuilder::response_timeout), or answering what the
///   script never returns) every call answers [`MeterError`], which the verifier answers with
///   503: a quota is never lifted silently. Building never waits for Redis; the connection is
///   made (and remade after an outage) by the calls.
#[derive(Clone)]
pub struct RedisQuotaMeter {
    inner: Arc<Inner>,
}

struct Inner {
    connection: LazyConnection,
    script: redis::Script,
    prefix: String,
    response_timeout: Duration,
    connection_timeout: Duration,
}

impl RedisQuotaMeter {
    /// Configures a meter on `target`: a URL (`"redis://127.0.0.1:6379"`) or a
    /// [`redis::Client`]. Defaults: prefix `keygate` (keys `keygate:quota:…`), 250 ms per call
    /// (connecting included), 1 s per connection attempt.
    pub fn builder(target: impl Into<RedisTarget>) -> RedisQuotaMeterBuilder {
        RedisQuotaMeterBuilder {
            target: target.into(),
            prefix: "keygate".to_owned(),
            response_timeout: Duration::from_millis(250),
            connection_timeout: Duration::from_secs(1),
        }
    }

    /// The Redis key holding `subject`'s counter (for operators and tests):
    /// `{prefix}:quota:key:{id}` or `{prefix}:quota:owner:{tag}`.
    #[must_use]
    pub fn state_key(&self, subject: &QuotaSubject) -> String {
        format!("{}:quota:{subject}", self.inner.prefix)
    }

    async fn warm_up(self) {
        let inner = &*self.inner;
        let loaded = inner
            .connection
            .load_script(
                &inner.script,
                inner.connection_timeout + inner.response_timeout,
            )
            .await;
        if let Err(error) = loaded {
            tracing::warn!(
                target: "keygate::redis",
                "redis quota meter: redis does not answer yet, quota checks answer 503 until it does: {error}"
            );
        }
    }

    /// Runs the script in `mode` (`c` charge, `r` refund) over `lines`.
    async fn run(
        &self,
        mode: &str,
        lines: &[QuotaLine],
        cost: u64,
        charged: [u64; MAX_LINES],
        now: SystemTime,
    ) -> Result<Vec<i64>, Error> {
        let mut invocation = self.inner.script.prepare_invoke();
        // A cost above the largest quota can be spent from no line and, given back, refills
        // any line to the top: the same as MAX_QUOTA + 1, which Lua's numbers hold exactly.
        invocation.arg(mode).arg(cost.min(MAX_QUOTA + 1));
        for (line, charged) in lines.iter().zip(charged) {
            invocation.key(self.state_key(&line.subject));
            let args = ScriptLine::of(&line.quota, now);
            invocation
                .arg(line.quota.counter_kind().as_str())
                .arg(args.window)
                .arg(if args.credits { "c" } else { "p" })
                .arg(args.size)
                .arg(args.refill)
                .arg(args.ttl_ms)
                .arg(charged)
                .arg(line.granted.min(MAX_GRANTED));
        }
        let mut connection = self.inner.connection.current();
        let reply = within(
            self.inner.response_timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection.manager),
        )
        .await;
        self.inner.connection.settle(&connection, reply)
    }

    async fn read(&self, subject: &QuotaSubject) -> Result<Option<String>, Error> {
        let mut connection = self.inner.connection.current();
        let mut get = redis::cmd("GET");
        get.arg(self.state_key(subject));
        let reply = within(
            self.inner.response_timeout,
            get.query_async::<Option<String>>(&mut connection.manager),
        )
        .await;
        self.inner.connection.settle(&connection, reply)
    }
}

/// A line's script arguments, computed at `now`.
struct ScriptLine {
    window: u64,
    credits: bool,
    size: u64,
    refill: u64,
    ttl_ms: u64,
}

impl ScriptLine {
    fn of(quota: &Quota, now: SystemTime) -> Self {
        let window = quota.window_at(now);
        match quota {
            Quota::Credits { credits, refill } => Self {
                window,
                credits: true,
                size: *credits,
                refill: refill.map_or(0, |r| r.amount()),
                ttl_ms: 0,
            },
            // `Quota` is non-exhaustive only to other crates' eyes; a period is all else.
            _ => Self {
                window,
                credits: false,
                size: quota.size(),
                refill: 0,
                ttl_ms: u64::try_from(
                    (quota.reset_after(now).unwrap_or_default() + PERIOD_KEY_MARGIN).as_millis(),
                )
                .unwrap_or(u64::MAX),
            },
        }
    }
}

/// The decision from the script's charge reply `{spent, window_1, value_1, …}`.
pub(crate) fn decision(
    lines: &[QuotaLine],
    cost: u64,
    now: SystemTime,
    reply: &[i64],
) -> Result<QuotaDecision, Error> {
    let unexpected = || {
        Error::UnexpectedReply(format!(
            "expected {} integers from the quota script, got {reply:?}",
            1 + 2 * lines.len()
        ))
    };
    if reply.len() != 1 + 2 * lines.len() {
        return Err(unexpected());
    }
    let number = |n: i64| u64::try_from(n).map_err(|_| unexpected());
    let mut states = [CounterState {
        kind: CounterKind::Credits,
        window: 0,
        value: 0,
        granted: 0,
    }; MAX_LINES];
    for (i, (line, state)) in lines.iter().zip(states.iter_mut()).enumerate() {
        // The script counted the line's top-ups before replying.
        *state = CounterState {
            kind: line.quota.counter_kind(),
            window: number(reply[1 + 2 * i])?,
            value: number(reply[2 + 2 * i])?,
            granted: line.granted,
        };
    }
    let decision = QuotaDecision::charge(lines, &mut states[..lines.len()], cost, now);
    if decision.allowed != (reply[0] == 1) {
        return Err(Error::UnexpectedReply(format!(
            "the quota script {} a charge keygate's rule {}",
            if reply[0] == 1 { "spent" } else { "refused" },
            if decision.allowed {
                "allows"
            } else {
                "refuses"
            },
        )));
    }
    Ok(decision)
}

/// A counter as the script writes it, `kind:window:value` or `kind:window:value:granted`.
pub(crate) fn parse_counter(text: &str) -> Option<CounterState> {
    let mut parts = text.split(':');
    let kind = parts.next()?.parse().ok()?;
    let window = parts.next()?.parse().ok()?;
    let value = parts.next()?.parse().ok()?;
    let granted = match parts.next() {
        Some(granted) => granted.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(CounterState {
        kind,
        window,
        value,
        granted,
    })
}

fn too_many_lines() -> MeterError {
    MeterError(format!("a charge spends from at most {MAX_LINES} quota lines").into())
}

fn meter_error(error: Error) -> MeterError {
    tracing::warn!(target: "keygate::redis", "redis quota meter: {error}");
    MeterError(Box::new(error))
}

#[async_trait]
impl QuotaMeter for RedisQuotaMeter {
    async fn charge(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        now: SystemTime,
    ) -> Result<QuotaDecision, MeterError> {
        if lines.len() > MAX_LINES {
            return Err(too_many_lines());
        }
        let reply = self
            .run("c", lines, cost, [0; MAX_LINES], now)
            .await
            .map_err(meter_error)?;
        decision(lines, cost, now, &reply).map_err(meter_error)
    }

    async fn refund(
        &self,
        lines: &[QuotaLine],
        cost: u64,
        decision: &QuotaDecision,
        now: SystemTime,
    ) -> Result<(), MeterError> {
        if lines.len() > MAX_LINES {
            return Err(too_many_lines());
        }
        if !decision.allowed || lines.is_empty() {
            return Ok(());
        }
        self.run("r", lines, cost, decision.windows, now)
            .await
            .map_err(meter_error)?;
        Ok(())
    }

    async fn usage(&self, line: &QuotaLine, now: SystemTime) -> Result<QuotaUsage, MeterError> {
        let saved = match self.read(&line.subject).await.map_err(meter_error)? {
            None => None,
            Some(text) => Some(parse_counter(&text).ok_or_else(|| {
                meter_error(Error::UnexpectedReply(format!(
                    "unreadable quota counter at {}",
                    self.state_key(&line.subject)
                )))
            })?),
        };
        let kind = line.quota.counter_kind();
        let state = match saved {
            // As the script: a counter in a later window (a clock ahead) is taken as it is.
            Some(saved) if saved.kind == kind && saved.window > line.quota.window_at(now) => {
                line.quota.with_granted(saved, line.granted)
            }
            saved => line.current(saved, now),
        };
        Ok(QuotaUsage {
            remaining: line.quota.remaining_in(state),
            state,
            reset: line.quota.reset_after(now),
        })
    }
}

impl std::fmt::Debug for RedisQuotaMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotaMeter")
            .field("prefix", &self.inner.prefix)
            .field("response_timeout", &self.inner.response_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisQuotaMeter`]; see [`RedisQuotaMeter::builder`] for the defaults.
#[derive(Debug)]
#[must_use]
pub struct RedisQuotaMeterBuilder {
    target: RedisTarget,
    prefix: String,
    response_timeout: Duration,
    connection_timeout: Duration,
}

impl RedisQuotaMeterBuilder {
    /// The first part of every key (default `keygate`): keys are `{prefix}:quota:…`. Give each
    /// deployment sharing one Redis its own; every instance of one deployment the same.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest wait for one call, connecting included (default 250 ms); then the call answers
    /// [`MeterError`] (503).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Longest wait for one connection attempt (default 1 s). Calls still wait no longer than
    /// the response timeout.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Builds the meter without waiting for Redis, and starts connecting and loading the
    /// script in the background (a warning is logged if that fails). Async so that it runs
    /// inside the Tokio runtime the connection needs.
    ///
    /// # Errors
    /// [`Error::Redis`] when the URL is invalid (not when Redis is unreachable).
    pub async fn build(self) -> Result<RedisQuotaMeter, Error> {
        let client = self.target.client()?;
        let connection =
            LazyConnection::new(client, self.connection_timeout, self.response_timeout)?;
        let meter = RedisQuotaMeter {
            inner: Arc::new(Inner {
                connection,
                script: redis::Script::new(SCRIPT),
                prefix: self.prefix,
                response_timeout: self.response_timeout,
                connection_timeout: self.connection_timeout,
            }),
        };
        tokio::spawn(meter.clone().warm_up());
        Ok(meter)
    }
}

#[cfg(test)]
mod tests {
    use keygate::KeyId;
    use keygate::quota::QuotaPeriod;

    use super::*;

    fn line(quota: &str) -> QuotaLine {
        QuotaLine::new(
            QuotaSubject::Key(KeyId::random()),
            quota.parse().unwrap_or_else(|e| panic!("{quota}: {e}")),
        )
    }

    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 43_200)
    }

    #[test]
    fn script_arguments_per_kind() {
        let day = ScriptLine::of(&line("10/day").quota, noon());
        assert_eq!((day.window, day.credits, day.size), (20_000, false, 10));
        assert_eq!(
            day.ttl_ms,
            (43_200 + 3_600) * 1_000,
            "window end plus the margin"
        );
        let credits = ScriptLine::of(&line("credits 5 refill 7 every 1h").quota, noon());
        assert_eq!(
            (
                credits.window,
                credits.credits,
                credits.size,
                credits.refill,
                credits.ttl_ms
            ),
            (20_000 * 24 + 12, true, 5, 7, 0)
        );
    }

    #[test]
    fn replies_become_the_shared_rules_decisions() -> Result<(), Error> {
        let lines = [line("5/day"), line("credits 3")];
        let allowed = decision(&lines, 2, noon(), &[1, 20_000, 1, 0, 3])?;
        assert!(allowed.allowed);
        assert_eq!((allowed.line, allowed.remaining), (1, 1));
        assert_eq!(allowed.windows[..2], [20_000, 0]);
        let refused = decision(&lines, 2, noon(), &[0, 20_000, 4, 0, 3])?;
        assert_eq!(
            (refused.allowed, refused.line, refused.remaining),
            (false, 0, 1)
        );
        // The script and the rule disagreeing is an error, never a guess.
        assert!(matches!(
            decision(&lines, 2, noon(), &[1, 20_000, 4, 0, 3]),
            Err(Error::UnexpectedReply(_))
        ));
        assert!(matches!(
            decision(&lines, 2, noon(), &[1, 20_000]),
            Err(Error::UnexpectedReply(_))
        ));
        assert!(matches!(
            decision(&lines, 2, noon(), &[1, 20_000, -1, 0, 3]),
            Err(Error::UnexpectedReply(_))
        ));
        Ok(())
    }

    #[test]
    fn counters_read_back() {
        assert_eq!(
            parse_counter("day:20000:17"),
            Some(CounterState {
                kind: CounterKind::Period(QuotaPeriod::Day),
                window: 20_000,
                value: 17,
                granted: 0,
            })
        );
        assert_eq!(
            parse_counter("credits:0:1500:1000"),
            Some(CounterState {
                kind: CounterKind::Credits,
                window: 0,
                value: 1_500,
                granted: 1_000,
            })
        );
        assert_eq!(parse_counter("week:1:2"), None);
        assert_eq!(parse_counter("credits:1"), None);
        assert_eq!(parse_counter("credits:1:x"), None);
        assert_eq!(parse_counter("credits:1:2:x"), None);
        assert_eq!(parse_counter("credits:1:2:3:4"), None);
    }
}
