//! The scenario table: one list of cases (request, key state, store behaviour) and what a client
//! must see. `tests/tests/scenarios.rs` runs it against the axum app and the actix-web app and
//! fails on any case that either framework gets wrong, or that the two answer differently; and
//! runs every case that applies to gRPC (all but those with a [`Case::skip_grpc`] reason) against
//! the tonic app, with the HTTP status mapped to a gRPC code ([`grpc_code`]).

use std::time::Duration;

use keygate::rate::RatePolicy;
use keygate::{Reason, VerifierBuilder};

use crate::tonic_app::{GrpcReply, grpc_path};
use crate::{EnvironmentKeys, Keys, NamedKeys, QuotaKeys, Reply};

/// The rate limit of keys without their own, in the scenario verifiers.
pub const DEFAULT_RATE: &str = "100/1h burst 30";
/// The one trusted reverse proxy of the scenario verifiers.
pub const PROXY: &str = "192.0.2.254";

/// The configuration both frameworks' verifiers get: a default rate limit (`100/1h burst 30`),
/// the default failed-attempts limit (`10/1m burst 20`), and one trusted proxy ([`PROXY`]).
pub fn configure(builder: VerifierBuilder) -> VerifierBuilder {
    builder
        .default_rate_limit(DEFAULT_RATE.parse::<RatePolicy>().unwrap())
        .trusted_proxies([format!("{PROXY}/32").parse().unwrap()])
}

/// The rate limit of `test` keys without their own, in the environment scenarios' verifiers
/// (`live` keys get [`DEFAULT_RATE`]).
pub const TEST_ENVIRONMENT_RATE: &str = "10/1h burst 10";

/// The configuration of the environment scenarios' verifiers: [`configure`], and
/// [`TEST_ENVIRONMENT_RATE`] for `test` keys without a limit of their own. Their keyring is
/// [`crate::environments_keyring`].
pub fn configure_environments(builder: VerifierBuilder) -> VerifierBuilder {
    configure(builder)
        .environment_rate_limit("test", TEST_ENVIRONMENT_RATE.parse::<RatePolicy>().unwrap())
}

/// The verifier's default for the named limit `reads`, in the named-limit scenarios.
pub const DEFAULT_READS: &str = "3/1h";

/// The configuration of the named-limit scenarios' verifiers: [`configure`], and
/// [`DEFAULT_READS`] for keys without a `reads` limit of their own.
pub fn configure_named(builder: VerifierBuilder) -> VerifierBuilder {
    configure(builder).default_named_limit("reads", DEFAULT_READS.parse::<RatePolicy>().unwrap())
}

/// The challenge of every invalid key.
pub const INVALID_TOKEN: &str = r#"Bearer realm="api", error="invalid_token""#;

/// One row of the table: a request, the store's behaviour, and everything a client (and the audit
/// trail) should see.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case shows.
    pub name: &'static str,
    /// Request path (GET).
    pub path: &'static str,
    /// Request headers, in order.
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// Connection peer address.
    pub peer: &'static str,
    /// Expected status.
    pub status: u16,
    /// Expected `WWW-Authenticate`, or none.
    pub www_authenticate: Option<&'static str>,
    /// Expected problem `type`, or no problem body.
    pub problem: Option<&'static str>,
    /// Expected rejection reason in the response extensions.
    pub reason: Option<Reason>,
    /// Expected body, when pinned.
    pub body: Option<&'static str>,
    /// Whether the store is down during the request.
    pub store_down: bool,
    /// Expected increase of store `find` calls, when the case pins it.
    pub store_calls: Option<usize>,
    /// How far the clock moves forward before the request.
    pub advance: Duration,
    /// Response headers pinned by the case: a value, or absent (`None`). For gRPC, the
    /// response's metadata.
    pub headers_out: Vec<(&'static str, Option<String>)>,
    /// Why the tonic run skips the case, if it does.
    pub skip_grpc: Option<&'static str>,
}

impl Case {
    fn new(name: &'static str, path: &'static str, status: u16) -> Self {
        Self {
            name,
            path,
            headers: Vec::new(),
            peer: "127.0.0.1:40000",
            status,
            www_authenticate: None,
            problem: None,
            reason: None,
            body: None,
            store_down: false,
            store_calls: None,
            advance: Duration::ZERO,
            headers_out: Vec::new(),
            skip_grpc: None,
        }
    }
    fn skip_grpc(mut self, why: &'static str) -> Self {
        self.skip_grpc = Some(why);
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn bearer(self, key: &str) -> Self {
        self.header("authorization", format!("Bearer {key}"))
    }
    fn api_key(self, key: impl Into<Vec<u8>>) -> Self {
        self.header("x-api-key", key)
    }
    fn peer(mut self, peer: &'static str) -> Self {
        self.peer = peer;
        self
    }
    fn challenge(mut self, value: &'static str) -> Self {
        self.www_authenticate = Some(value);
        self
    }
    fn problem(mut self, code: &'static str, reason: Reason) -> Self {
        self.problem = Some(code);
        self.reason = Some(reason);
        self
    }
    fn invalid_token(self, reason: Reason) -> Self {
        self.challenge(INVALID_TOKEN)
            .problem("urn:keygate:problem:invalid_token", reason)
    }
    fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }
    fn store_down(mut self) -> Self {
        self.store_down = true;
        self
    }
    fn store_calls(mut self, calls: usize) -> Self {
        self.store_calls = Some(calls);
        self
    }
    fn after(mut self, advance: Duration) -> Self {
        self.advance = advance;
        self
    }
    fn expect_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers_out.push((name, Some(value.into())));
        self
    }
    fn no_header(mut self, name: &'static str) -> Self {
        self.headers_out.push((name, None));
        self
    }
    /// A key's allowed request: `RateLimit-Policy` `policy`, `RateLimit` `r`/`t`.
    fn key_rate(self, q: u32, w: u32, r: u32, t: u64) -> Self {
        self.expect_header("ratelimit-policy", format!(r#""key";q={q};w={w}"#))
            .expect_header("ratelimit", format!(r#""key";r={r};t={t}"#))
            .no_header("retry-after")
    }
    /// An allowed request of a key with a quota: `RateLimit-Policy` `"quota";q=…;w=…` and
    /// `RateLimit` `"quota";r=…;t=…` (`w` and `t` absent for credits that never refill).
    fn quota_rate(self, q: u64, w: Option<u64>, r: u64, t: Option<u64>) -> Self {
        self.quota_fields(q, w, r, t).no_header("retry-after")
    }
    fn quota_fields(self, q: u64, w: Option<u64>, r: u64, t: Option<u64>) -> Self {
        let policy = match w {
            Some(w) => format!(r#""quota";q={q};w={w}"#),
            None => format!(r#""quota";q={q}"#),
        };
        let limit = match t {
            Some(t) => format!(r#""quota";r={r};t={t}"#),
            None => format!(r#""quota";r={r}"#),
        };
        self.expect_header("ratelimit-policy", policy)
            .expect_header("ratelimit", limit)
    }
    /// A 429 `quota_exhausted`: `Retry-After` at the next period or refill (none when the
    /// quota never refills) and the refusing quota's `"quota"` items.
    fn quota_exhausted(self, q: u64, w: Option<u64>, r: u64, t: Option<u64>) -> Self {
        let case = self
            .problem(
                "urn:keygate:problem:quota_exhausted",
                Reason::QuotaExhausted,
            )
            .quota_fields(q, w, r, t)
            .no_header("www-authenticate");
        match t {
            Some(t) => case.expect_header("retry-after", t.to_string()),
            None => case.no_header("retry-after"),
        }
    }
    /// An allowed request through the route's named limit `name` only: `RateLimit-Policy`
    /// `"name";q=…;w=…`, `RateLimit` `"name";r=…;t=…`.
    fn named_rate(self, name: &str, q: u32, w: u32, r: u32, t: u64) -> Self {
        self.expect_header("ratelimit-policy", format!(r#""{name}";q={q};w={w}"#))
            .expect_header("ratelimit", format!(r#""{name}";r={r};t={t}"#))
            .no_header("retry-after")
    }
    /// A 429 `rate_limited` by the route's named limit `name`: `Retry-After` `retry`, and the
    /// limit's own items.
    fn named_too_many(self, name: &str, q: u32, w: u32, retry: u64, t: u64) -> Self {
        self.problem("urn:keygate:problem:rate_limited", Reason::RateLimited)
            .expect_header("retry-after", retry.to_string())
            .expect_header("ratelimit-policy", format!(r#""{name}";q={q};w={w}"#))
            .expect_header("ratelimit", format!(r#""{name}";r=0;t={t}"#))
            .no_header("www-authenticate")
    }
    /// A 429 with `Retry-After` `retry`, and policy `name` (`key` or `failures`) exhausted.
    fn too_many(self, name: &str, q: u32, w: u32, retry: u64, t: u64) -> Self {
        let (code, reason) = if name == "key" {
            ("urn:keygate:problem:rate_limited", Reason::RateLimited)
        } else {
            (
                "urn:keygate:problem:too_many_failures",
                Reason::TooManyFailures,
            )
        };
        self.problem(code, reason)
            .expect_header("retry-after", retry.to_string())
            .expect_header("ratelimit-policy", format!(r#""{name}";q={q};w={w}"#))
            .expect_header("ratelimit", format!(r#""{name}";r=0;t={t}"#))
            .no_header("www-authenticate")
    }
}

/// Every case, in order. Run it on fresh verifiers built with [`configure`]: store-call counts
/// and rate limits assume the cases before.
pub fn table(keys: &Keys) -> Vec<Case> {
    let mut cases = authentication(keys);
    cases.extend(rate_limits(keys));
    cases.extend(owners(keys));
    cases
}

/// Why the quota cases do not run on gRPC: `Cost` is an HTTP route guard (tower and actix);
/// keygate-tonic's quota answers follow from the same verifier (`RESOURCE_EXHAUSTED`).
/// The quota cases (issue 17 item 2), on fresh verifiers built with [`configure`] over a
/// harness with [`QuotaKeys`], starting at `start` (the harness clock when the table is
/// built). The first case moves the clock to the next UTC noon; the last moves it on so that
/// the whole table spans whole days, so a second run (the next framework's, on the same
/// clock) meets the same times of day.
pub fn quota_table(keys: &QuotaKeys, start: std::time::SystemTime) -> Vec<Case> {
    use Reason::*;
    const DAY: u64 = 86_400;
    let secs = |d: u64| Duration::from_secs(d);
    let start_secs = start
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let noon = DAY / 2;
    let to_noon = (noon + DAY - start_secs % DAY) % DAY;
    let to_noon = if to_noon == 0 { DAY } else { to_noon };
    let day = Some(DAY);
    let mut cases = vec![
        // Noon: 5/day on a route of cost 2.
        Case::new(
            "a key with 5/day on a route of cost 2: the first request",
            "/report",
            200,
        )
        .bearer(&keys.five_a_day)
        .after(secs(to_noon))
        .body("3 left")
        .quota_rate(5, day, 3, Some(noon)),
        Case::new(
            "a key with 5/day on a route of cost 2: the second request",
            "/report",
            200,
        )
        .bearer(&keys.five_a_day)
        .body("1 left")
        .quota_rate(5, day, 1, Some(noon)),
        Case::new(
            "a key with 5/day on a route of cost 2: the third is 429 until UTC midnight",
            "/report",
            429,
        )
        .bearer(&keys.five_a_day)
        .quota_exhausted(5, day, 1, Some(noon)),
        Case::new(
            "a key with 5/day is allowed again at the next UTC day",
            "/report",
            200,
        )
        .bearer(&keys.five_a_day)
        .after(secs(noon))
        .body("3 left")
        .quota_rate(5, day, 3, Some(DAY)),
        // Noon of the next day: credits refill on schedule (every hour, on the hour).
        Case::new("credits 2 refill 2 every 1h: one", "/hello", 200)
            .bearer(&keys.refilled)
            .after(secs(noon))
            .body("hello, refilled")
            .quota_rate(2, Some(3600), 1, Some(3600)),
        Case::new("credits 2 refill 2 every 1h: two", "/hello", 200)
            .bearer(&keys.refilled)
            .quota_rate(2, Some(3600), 0, Some(3600)),
        Case::new(
            "credits 2 refill 2 every 1h: spent until the next refill",
            "/hello",
            429,
        )
        .bearer(&keys.refilled)
        .quota_exhausted(2, Some(3600), 0, Some(3600)),
        Case::new("credits refill on schedule", "/hello", 200)
            .bearer(&keys.refilled)
            .after(secs(3600))
            .quota_rate(2, Some(3600), 1, Some(3600)),
        // 13:00.
        Case::new("credits that never refill: the last one", "/hello", 200)
            .bearer(&keys.one_credit)
            .quota_rate(1, None, 0, None),
        Case::new(
            "credits that never refill: 429 without Retry-After",
            "/hello",
            429,
        )
        .bearer(&keys.one_credit)
        .quota_exhausted(1, None, 0, None),
    ];
    let to_midnight = Some(DAY - 13 * 3600);
    for i in 1..=10_u64 {
        cases.push(
            Case::new(
                "an owner quota of 10/day shared by three keys allows 10 in total",
                "/hello",
                200,
            )
            .bearer(&keys.shared[(i as usize - 1) % 3])
            .quota_rate(10, day, 10 - i, to_midnight),
        );
    }
    for key in &keys.shared {
        cases.push(
            Case::new(
                "an owner quota of 10/day shared by three keys: the 11th is refused",
                "/hello",
                429,
            )
            .bearer(key)
            .quota_exhausted(10, day, 0, to_midnight),
        );
    }
    cases.extend([
        Case::new(
            "the tighter of key and owner quota wins: the key's",
            "/hello",
            200,
        )
        .bearer(&keys.tight_key)
        .quota_rate(2, day, 1, to_midnight),
        Case::new(
            "the tighter of key and owner quota wins: the key's",
            "/hello",
            200,
        )
        .bearer(&keys.tight_key)
        .quota_rate(2, day, 0, to_midnight),
        Case::new(
            "the tighter of key and owner quota wins: the key's",
            "/hello",
            429,
        )
        .bearer(&keys.tight_key)
        .quota_exhausted(2, day, 0, to_midnight),
        Case::new(
            "the tighter of key and owner quota wins: the owner's",
            "/hello",
            200,
        )
        .bearer(&keys.tight_owner)
        .quota_rate(1, day, 0, to_midnight),
        Case::new(
            "the tighter of key and owner quota wins: the owner's",
            "/hello",
            429,
        )
        .bearer(&keys.tight_owner)
        .quota_exhausted(1, day, 0, to_midnight),
    ]);
    for _ in 0..3 {
        cases.push(
            Case::new("a scope refusal spends no quota", "/orders", 403)
                .bearer(&keys.unscoped)
                .challenge(r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#)
                .problem("urn:keygate:problem:insufficient_scope", InsufficientScope)
                .quota_fields(2, day, 2, to_midnight),
        );
    }
    cases.extend([
        Case::new(
            "a scope refusal spends no quota: 2 of 2 left",
            "/hello",
            200,
        )
        .bearer(&keys.unscoped)
        .quota_rate(2, day, 1, to_midnight),
        Case::new(
            "a scope refusal spends no quota: 2 of 2 left",
            "/hello",
            200,
        )
        .bearer(&keys.unscoped)
        .quota_rate(2, day, 0, to_midnight),
        Case::new("a scope refusal spends no quota: then spent", "/hello", 429)
            .bearer(&keys.unscoped)
            .quota_exhausted(2, day, 0, to_midnight),
    ]);
    for _ in 0..3 {
        cases.push(
            Case::new("Cost::new(0) is free", "/free", 200)
                .bearer(&keys.one_a_day)
                .body("1 left")
                .quota_rate(1, day, 1, to_midnight),
        );
    }
    cases.extend([
        Case::new("Cost::new(0) is free: the one left", "/hello", 200)
            .bearer(&keys.one_a_day)
            .quota_rate(1, day, 0, to_midnight),
        Case::new("Cost::new(0) is free: then spent", "/hello", 429)
            .bearer(&keys.one_a_day)
            .quota_exhausted(1, day, 0, to_midnight),
        Case::new(
            "a rotated key keeps spending its predecessor's balance: the old key",
            "/hello",
            200,
        )
        .bearer(&keys.rotated_old)
        .quota_rate(3, day, 2, to_midnight),
        Case::new(
            "a rotated key keeps spending its predecessor's balance: the new key",
            "/hello",
            200,
        )
        .bearer(&keys.rotated_new)
        .quota_rate(3, day, 1, to_midnight),
        Case::new(
            "a rotated key keeps spending its predecessor's balance: the new key",
            "/hello",
            200,
        )
        .bearer(&keys.rotated_new)
        .quota_rate(3, day, 0, to_midnight),
        Case::new(
            "a rotated key keeps spending its predecessor's balance: both spent",
            "/hello",
            429,
        )
        .bearer(&keys.rotated_old)
        .quota_exhausted(3, day, 0, to_midnight),
    ]);
    // Round the table up to whole days (at least half a day on), so the next run meets the
    // same times of day; there the 5/day key has a fresh day again.
    let spent = to_noon + noon + noon + 3600;
    let total = (spent + noon).div_ceil(DAY) * DAY;
    let end_of_day = DAY - start_secs % DAY;
    cases.push(
        Case::new("a key with 5/day on a later UTC day", "/report", 200)
            .bearer(&keys.five_a_day)
            .after(secs(total - spent))
            .body("3 left")
            .quota_rate(5, day, 3, Some(end_of_day)),
    );
    cases
}

/// The named-limit cases (issue 17 item 4), on fresh verifiers built with [`configure_named`]
/// over a harness with [`NamedKeys`]. Every policy is per hour and the clock stands still, so
/// the table reads the same on each framework's fresh limiter.
pub fn named_table(keys: &NamedKeys) -> Vec<Case> {
    const HOUR: u32 = 3600;
    vec![
        Case::new("writes: 2/1h on a /write route: the first", "/write", 200)
            .bearer(&keys.writer)
            .body("hello, writer")
            .named_rate("writes", 2, HOUR, 1, 1800),
        Case::new("writes: 2/1h: the second", "/write", 200)
            .bearer(&keys.writer)
            .named_rate("writes", 2, HOUR, 0, 3600),
        Case::new(
            "writes: 2/1h: the third is 429 naming the limit",
            "/write",
            429,
        )
        .bearer(&keys.writer)
        .named_too_many("writes", 2, HOUR, 1800, 3600),
        Case::new(
            "a spent writes limit leaves other routes alone",
            "/hello",
            200,
        )
        .bearer(&keys.writer)
        .body("hello, writer")
        .no_header("ratelimit")
        .no_header("ratelimit-policy"),
        Case::new(
            "a key without reads of its own gets the verifier's default (3/1h)",
            "/read",
            200,
        )
        .bearer(&keys.writer)
        .named_rate("reads", 3, HOUR, 2, 1200),
        Case::new("reads: unlimited switches the default off", "/read", 200)
            .bearer(&keys.unlimited_reader)
            .no_header("ratelimit"),
        Case::new("reads: unlimited: still no limit", "/read", 200)
            .bearer(&keys.unlimited_reader)
            .no_header("ratelimit"),
        Case::new("reads: unlimited: beyond the default", "/read", 200)
            .bearer(&keys.unlimited_reader)
            .no_header("ratelimit"),
        Case::new("reads: unlimited: and on", "/read", 200)
            .bearer(&keys.unlimited_reader)
            .no_header("ratelimit"),
        Case::new(
            "a key with no writes limit at all passes /write",
            "/write",
            200,
        )
        .bearer(&keys.unlimited_reader)
        .no_header("ratelimit"),
        Case::new("an owner's writes: 3/1h, shared: key one", "/write", 200)
            .bearer(&keys.team[0])
            .named_rate("writes", 3, HOUR, 2, 1200),
        Case::new("an owner's writes: 3/1h, shared: key two", "/write", 200)
            .bearer(&keys.team[1])
            .named_rate("writes", 3, HOUR, 1, 2400),
        Case::new(
            "an owner's writes: 3/1h, shared: key one again",
            "/write",
            200,
        )
        .bearer(&keys.team[0])
        .named_rate("writes", 3, HOUR, 0, 3600),
        Case::new(
            "an owner's writes: 3/1h, shared: the fourth of the owner is 429",
            "/write",
            429,
        )
        .bearer(&keys.team[1])
        .named_too_many("writes", 3, HOUR, 1200, 3600),
        Case::new(
            "key writes 1/1h under owner 5/1h: the tighter reports",
            "/write",
            200,
        )
        .bearer(&keys.tight)
        .named_rate("writes", 1, HOUR, 0, 3600),
        Case::new(
            "key writes 1/1h under owner 5/1h: the key's refuses",
            "/write",
            429,
        )
        .bearer(&keys.tight)
        .named_too_many("writes", 1, HOUR, 3600, 3600),
        Case::new("a named limit and a quota: both items", "/write", 200)
            .bearer(&keys.metered)
            .expect_header("ratelimit-policy", r#""quota";q=3, "writes";q=1;w=3600"#)
            .expect_header("ratelimit", r#""quota";r=2, "writes";r=0;t=3600"#),
        Case::new("a named limit's refusal spends no quota", "/write", 429)
            .bearer(&keys.metered)
            .named_too_many("writes", 1, HOUR, 3600, 3600),
        Case::new(
            "a named limit's refusal spent no quota: 1 left after this",
            "/hello",
            200,
        )
        .bearer(&keys.metered)
        .quota_rate(3, None, 1, None),
        Case::new("no key on a /write route is 401", "/write", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                Reason::MissingCredentials,
            ),
    ]
}

/// Owners (issue 17 item 1): a limit shared by an owner's keys, a key's own refusals that
/// spend nothing of its owner's, and a bulk revocation.
fn owners(keys: &Keys) -> Vec<Case> {
    let mut cases = Vec::new();
    // 10/1m shared by three keys (each also under the default, 100/1h burst 30): 10 in all,
    // round robin; the owner's allowance is the tighter, so its fields are the ones shown.
    for i in 1..=10_u32 {
        cases.push(
            Case::new(
                "an owner with 10/min shared by three keys allows 10 in total",
                "/hello",
                200,
            )
            .bearer(&keys.owned[(i as usize - 1) % 3])
            .key_rate(10, 60, 10 - i, 6 * u64::from(i)),
        );
    }
    for key in &keys.owned {
        cases.push(
            Case::new(
                "an owner with 10/min shared by three keys: the 11th is refused, whichever key",
                "/hello",
                429,
            )
            .bearer(key)
            .too_many("key", 10, 60, 6, 60),
        );
    }
    // 3/1m shared by two keys, one of them also under its own 1/1m: the requests its own
    // limit refuses take nothing from the owner's allowance, so the other key still gets the
    // two the owner has left (T = 20 s: `t` grows by 20 a request, a refusal waits 20 s).
    let [capped, sibling] = &keys.thrifty;
    cases.push(
        Case::new(
            "a key under 1/1m and its owner's 3/1m: the key's own allowance is the tighter",
            "/hello",
            200,
        )
        .bearer(capped)
        .key_rate(1, 60, 0, 60),
    );
    for _ in 0..2 {
        cases.push(
            Case::new(
                "a key under 1/1m and its owner's 3/1m: its own limit refuses the second",
                "/hello",
                429,
            )
            .bearer(capped)
            .too_many("key", 1, 60, 60, 60),
        );
    }
    for (left, reset) in [(1, 40), (0, 60)] {
        cases.push(
            Case::new(
                "a request its own limit refused took nothing from the owner: the sibling gets 2",
                "/hello",
                200,
            )
            .bearer(sibling)
            .key_rate(3, 60, left, reset),
        );
    }
    cases.push(
        Case::new(
            "the owner's 3/1m is spent by the 3 allowed requests: the sibling's next is 429",
            "/hello",
            429,
        )
        .bearer(sibling)
        .too_many("key", 3, 60, 20, 60),
    );
    for key in &keys.departed {
        cases.push(
            Case::new(
                "bulk revoke of an owner refuses each of its keys",
                "/hello",
                401,
            )
            .bearer(key)
            .invalid_token(Reason::Revoked),
        );
    }
    cases
}

fn authentication(keys: &Keys) -> Vec<Case> {
    use Reason::*;
    let long = format!("{}{}", keys.valid, "A".repeat(600));
    vec![
        Case::new("public route needs no key", "/", 200).body("public"),
        Case::new("no key", "/hello", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            )
            .store_calls(0),
        Case::new("other scheme only", "/hello", 401)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            ),
        Case::new("valid key, Bearer (cold: one store call)", "/hello", 200)
            .bearer(&keys.valid)
            .body("hello, valid")
            .store_calls(1),
        Case::new("valid key again (cache hit)", "/hello", 200)
            .bearer(&keys.valid)
            .body("hello, valid")
            .store_calls(0),
        Case::new("valid key, x-api-key", "/hello", 200)
            .api_key(keys.valid.as_str())
            .body("hello, valid"),
        Case::new("valid key, lowercase scheme", "/hello", 200)
            .header("authorization", format!("bearer {}", keys.valid))
            .body("hello, valid"),
        Case::new("valid key, uppercase scheme", "/hello", 200)
            .header("authorization", format!("BEARER {}", keys.valid))
            .body("hello, valid"),
        Case::new("two spaces after Bearer", "/hello", 401)
            .header("authorization", format!("Bearer  {}", keys.valid))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("credential headers marked sensitive", "/sensitive", 200)
            .bearer(&keys.valid)
            .body("sensitive=true"),
        Case::new("x-api-key header marked sensitive", "/sensitive", 200)
            .api_key(keys.valid.as_str())
            .body("sensitive=true"),
        Case::new("unknown id", "/hello", 401)
            .bearer(&keys.unknown)
            .invalid_token(UnknownKey)
            .store_calls(1),
        Case::new("unknown id again (negative cache)", "/hello", 401)
            .bearer(&keys.unknown)
            .invalid_token(UnknownKey)
            .store_calls(0),
        Case::new("canary (its one event is not folded)", "/hello", 401)
            .bearer(&keys.canary)
            .invalid_token(Canary)
            .store_calls(1),
        Case::new("canary again (cached)", "/hello", 401)
            .api_key(keys.canary.as_str())
            .invalid_token(Canary)
            .store_calls(0),
        Case::new("wrong secret", "/hello", 401)
            .bearer(&keys.wrong_secret)
            .invalid_token(WrongSecret),
        Case::new("revoked", "/hello", 401)
            .bearer(&keys.revoked)
            .invalid_token(Revoked),
        Case::new("disabled", "/hello", 401)
            .api_key(keys.disabled.as_str())
            .invalid_token(Disabled),
        Case::new("expired", "/hello", 401)
            .bearer(&keys.expired)
            .invalid_token(Expired),
        Case::new("malformed", "/hello", 401)
            .bearer("not-a-key")
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("empty x-api-key", "/hello", 401)
            .api_key("")
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("wrong prefix", "/hello", 401)
            .bearer(&keys.wrong_prefix)
            .invalid_token(WrongPrefix)
            .store_calls(0),
        Case::new("bad checksum", "/hello", 401)
            .bearer(&keys.bad_checksum)
            .invalid_token(BadChecksum)
            .store_calls(0),
        Case::new("credential over the length cap", "/hello", 401)
            .api_key(long)
            .invalid_token(CredentialTooLong)
            .store_calls(0),
        Case::new("1 MiB credential header", "/hello", 401)
            .api_key(vec![b'a'; 1 << 20])
            .invalid_token(CredentialTooLong)
            .store_calls(0)
            .skip_grpc(
                "the HTTP/2 server refuses a 1 MiB header block before any middleware (GOAWAY \
                 ENHANCE_YOUR_CALM); keygate-tonic's tests/server.rs checks that, and that the \
                 server goes on",
            ),
        // CR/LF cannot be inside a header value: both HTTP parsers refuse such a request before
        // any middleware runs (tested over real sockets in scenarios.rs).
        Case::new("tab inside the key", "/hello", 401)
            .api_key(format!("{}\t{}", &keys.valid[..20], &keys.valid[20..]))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("non-ASCII byte inside the key", "/hello", 401)
            .api_key(
                [
                    &keys.valid.as_bytes()[..20],
                    b"\xe9",
                    &keys.valid.as_bytes()[21..],
                ]
                .concat(),
            )
            .invalid_token(Malformed)
            .store_calls(0),
        // The rest of the byte-exact grammar (SECURITY-CHECKLIST item 18): look-alikes and
        // decorations that a lenient parser might strip or fold are all refused unread.
        Case::new("zero-width space inside the key", "/hello", 401)
            .api_key(inserted(&keys.valid, 20, "\u{200b}"))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("full-width letter inside the key", "/hello", 401)
            .api_key(replaced_letter(&keys.valid, "\u{ff21}"))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("trailing space after the key", "/hello", 401)
            .api_key(format!("{} ", keys.valid))
            .invalid_token(Malformed)
            .store_calls(0),
        Case::new("'=' padding after the key", "/hello", 401)
            .api_key(format!("{}==", keys.valid))
            .invalid_token(Malformed)
            .store_calls(0),
        // The secret is case-sensitive (item 16): one letter's case flipped fails the checksum.
        Case::new("one letter's case flipped", "/hello", 401)
            .bearer(&flip_case(&keys.valid))
            .invalid_token(BadChecksum)
            .store_calls(0),
        Case::new("valid key, mixed-case scheme", "/hello", 200)
            .header("authorization", format!("BeArEr {}", keys.valid))
            .body("hello, valid"),
        Case::new("two x-api-key headers", "/hello", 400)
            .api_key(keys.valid.as_str())
            .api_key(keys.valid.as_str())
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials)
            .store_calls(0),
        Case::new("Bearer and x-api-key together", "/hello", 400)
            .bearer(&keys.valid)
            .api_key(keys.valid.as_str())
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials)
            .store_calls(0),
        Case::new("two Authorization headers", "/hello", 400)
            .bearer(&keys.valid)
            .bearer(&keys.plain)
            .challenge(r#"Bearer realm="api", error="invalid_request""#)
            .problem("urn:keygate:problem:invalid_request", MultipleCredentials),
        Case::new(
            "query-string key ignored by default",
            "/hello?api_key=x",
            401,
        )
        .challenge(r#"Bearer realm="api""#)
        .problem(
            "urn:keygate:problem:missing_credentials",
            MissingCredentials,
        ),
        Case::new("IP-restricted key from outside", "/hello", 403)
            .bearer(&keys.ip_restricted)
            .peer("192.0.2.1:5000")
            .problem("urn:keygate:problem:forbidden", ForbiddenClientIp),
        Case::new("IP-restricted key from inside", "/hello", 200)
            .bearer(&keys.ip_restricted)
            .peer("10.1.2.3:5000")
            .body("hello, office"),
        Case::new("IP-restricted key, IPv4-mapped IPv6 peer", "/hello", 200)
            .bearer(&keys.ip_restricted)
            .peer("[::ffff:10.9.9.9]:5000")
            .body("hello, office"),
        Case::new("scope present", "/orders", 200)
            .bearer(&keys.valid)
            .body("hello, valid"),
        Case::new("scope missing", "/orders", 403)
            .bearer(&keys.plain)
            .challenge(r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#)
            .problem("urn:keygate:problem:insufficient_scope", InsufficientScope),
        Case::new(
            "environment route: a keyring without environments fails closed",
            "/live",
            403,
        )
        .bearer(&keys.plain)
        .problem("urn:keygate:problem:wrong_environment", WrongEnvironment)
        .no_header("www-authenticate"),
        Case::new("environment route without key", "/live", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            ),
        Case::new("scope route without key", "/orders", 401)
            .challenge(r#"Bearer realm="api""#)
            .problem(
                "urn:keygate:problem:missing_credentials",
                MissingCredentials,
            ),
        Case::new("store outage, uncached key", "/hello", 503)
            .bearer(&keys.fresh)
            .store_down()
            .problem("urn:keygate:problem:unavailable", StoreUnavailable)
            .store_calls(1),
        Case::new("store back: the outage was not cached", "/hello", 200)
            .bearer(&keys.fresh)
            .body("hello, fresh")
            .store_calls(1),
        Case::new("store outage, cached key keeps working", "/hello", 200)
            .bearer(&keys.valid)
            .store_down()
            .body("hello, valid")
            .store_calls(0),
        Case::new("optional route, no key", "/maybe", 200).body("anonymous"),
        Case::new("optional route, valid key", "/maybe", 200)
            .bearer(&keys.plain)
            .body("plain"),
        Case::new("optional route, invalid key still refused", "/maybe", 401)
            .bearer(&keys.revoked)
            .invalid_token(Revoked),
        Case::new("route with a parameter", "/items/42?q=secret", 200)
            .bearer(&keys.valid)
            .body("item 42")
            .skip_grpc(NO_PATH_PARAMETERS),
        Case::new("route with a parameter, refused", "/items/7", 401)
            .bearer(&keys.wrong_secret)
            .invalid_token(WrongSecret)
            .skip_grpc(NO_PATH_PARAMETERS),
    ]
}

/// The environment cases (issue 17 item 5), run on a verifier whose keyring has the
/// environments `live` (the default) and `test` ([`crate::environments_keyring`]), configured
/// with [`configure_environments`]: a key's environment is its record's, whatever prefix is
/// presented; `/live` requires `live`; `test` keys get their environment's default limit
/// unless they have their own.
pub fn environment_table(keys: &EnvironmentKeys) -> Vec<Case> {
    use Reason::*;
    vec![
        Case::new("live key on the live-only route", "/live", 200)
            .bearer(&keys.live)
            .body("hello, live")
            .store_calls(1)
            .key_rate(100, 3600, 29, 36),
        Case::new("test key on a route open to both", "/hello", 200)
            .bearer(&keys.test)
            .body("hello, test")
            .store_calls(1)
            .key_rate(10, 3600, 9, 360),
        Case::new("test key on the live-only route", "/live", 403)
            .bearer(&keys.test)
            .problem("urn:keygate:problem:wrong_environment", WrongEnvironment)
            .no_header("www-authenticate")
            .store_calls(0),
        Case::new(
            "test key: its environment's default limit, not the verifier's",
            "/hello",
            200,
        )
        .bearer(&keys.test)
        .key_rate(10, 3600, 7, 1080),
        Case::new("test key with its own limit: its own wins", "/hello", 200)
            .bearer(&keys.test_own_limit)
            .body("hello, test-own")
            .key_rate(2, 60, 1, 30),
        Case::new(
            "test key with its own limit, on the live-only route",
            "/live",
            403,
        )
        .bearer(&keys.test_own_limit)
        .problem("urn:keygate:problem:wrong_environment", WrongEnvironment),
        Case::new(
            "live key re-presented under the test prefix (cached record)",
            "/hello",
            401,
        )
        .bearer(&keys.live_as_test)
        .invalid_token(WrongSecret)
        .store_calls(0),
        Case::new(
            "live key re-presented under the test prefix, on the live-only route",
            "/live",
            401,
        )
        .bearer(&keys.live_as_test)
        .invalid_token(WrongSecret),
        Case::new(
            "test key re-presented under the live prefix, on the live-only route",
            "/live",
            401,
        )
        .bearer(&keys.test_as_live)
        .invalid_token(WrongSecret)
        .store_calls(0),
        Case::new("live key still works after the forgeries", "/live", 200)
            .bearer(&keys.live)
            .body("hello, live")
            .key_rate(100, 3600, 28, 72),
        Case::new("a prefix of no environment", "/hello", 401)
            .bearer(&keys.other_prefix)
            .invalid_token(WrongPrefix)
            .store_calls(0),
    ]
}

/// Why the `/items/{id}` cases do not apply to gRPC.
const NO_PATH_PARAMETERS: &str = "a gRPC path names a method: there are no path parameters";

/// The route template a case's audit event names: the router's pattern, never the raw path or
/// query. `None` for the public route, which keygate does not guard (no event).
#[must_use]
pub fn route_template(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/" => None,
        "/hello" => Some("/hello"),
        "/orders" => Some("/orders"),
        "/live" => Some("/live"),
        "/sensitive" => Some("/sensitive"),
        "/maybe" => Some("/maybe"),
        "/report" => Some("/report"),
        "/free" => Some("/free"),
        "/write" => Some("/write"),
        "/read" => Some("/read"),
        p if p.starts_with("/items/") => Some("/items/{id}"),
        other => panic!("no route template known for {other}"),
    }
}

/// Checks the audit events one case produced: none for the public route, else exactly one,
/// with the case's outcome, reason, route template and status.
///
/// # Errors
/// A description of what differs.
pub fn check_audit(case: &Case, events: &[keygate::audit::AuditEvent]) -> Result<(), String> {
    check_audit_as(case, events, route_template(case.path), case.status, "GET")
}

/// [`check_audit`] for the tonic app: the route is the gRPC method's path, the method `POST`,
/// and the status the HTTP status of every gRPC answer, 200 (the outcome and reason carry the
/// refusal).
///
/// # Errors
/// A description of what differs.
pub fn check_audit_grpc(case: &Case, events: &[keygate::audit::AuditEvent]) -> Result<(), String> {
    let route = route_template(case.path).map(grpc_path);
    check_audit_as(case, events, route.as_deref(), 200, "POST")
}

fn check_audit_as(
    case: &Case,
    events: &[keygate::audit::AuditEvent],
    route: Option<&str>,
    status: u16,
    method: &str,
) -> Result<(), String> {
    use keygate::audit::{Action, Outcome};
    let Some(route) = route else {
        return if events.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} audit events for an unguarded route",
                events.len()
            ))
        };
    };
    let [event] = events else {
        return Err(format!("{} audit events, want exactly 1", events.len()));
    };
    // A denial that names no existing key is folded (per client, reason and minute); each
    // case flushes, so its fold stands for this one request.
    if let Some(reason) = case.reason.filter(|r| keygate::audit::is_folded(*r)) {
        let want = (
            Action::Denials,
            Some(Outcome::Denied),
            Some(reason),
            Some(1),
        );
        let got = (
            event.action,
            event.outcome,
            event.reason,
            event.folded.as_ref().map(|f| f.count),
        );
        return if got == want {
            Ok(())
        } else {
            Err(format!("audit event {got:?}, want {want:?}"))
        };
    }
    let want = (
        Action::Request,
        Some(if case.reason.is_some() {
            Outcome::Denied
        } else {
            Outcome::Allowed
        }),
        case.reason,
        Some(route),
        Some(status),
        Some(method),
    );
    let got = (
        event.action,
        event.outcome,
        event.reason,
        event.route.as_deref(),
        event.status,
        event.method.as_ref().map(http::Method::as_str),
    );
    if got == want {
        Ok(())
    } else {
        Err(format!("audit event {got:?}, want {want:?}"))
    }
}

/// Rate limits, per key and per client, on a frozen clock moved only by the cases.
fn rate_limits(keys: &Keys) -> Vec<Case> {
    use Reason::*;
    let mut cases = Vec::new();
    let attacker = "198.51.100.7:6000";
    let ms = Duration::from_millis;

    // A key's own policy, 5/1s burst 5: one request every 200 ms, five at once.
    for r in (0..5).rev() {
        cases.push(
            Case::new("5/1s burst 5: within the burst", "/hello", 200)
                .bearer(&keys.limited)
                .body("hello, limited")
                .key_rate(5, 1, r, 1),
        );
    }
    cases.push(
        Case::new("5/1s burst 5: the sixth request is refused", "/hello", 429)
            .bearer(&keys.limited)
            .too_many("key", 5, 1, 1, 1)
            .store_calls(0),
    );
    cases.push(
        Case::new("5/1s burst 5: still refused 199 ms later", "/hello", 429)
            .bearer(&keys.limited)
            .after(ms(199))
            .too_many("key", 5, 1, 1, 1),
    );
    cases.push(
        Case::new(
            "5/1s burst 5: the full burst is back after the period",
            "/hello",
            200,
        )
        .bearer(&keys.limited)
        .after(ms(801))
        .key_rate(5, 1, 4, 1),
    );

    // No policy of its own: the verifier's default, 100/1h burst 30 (one per 36 s).
    for r in (0..30).rev() {
        cases.push(
            Case::new("no policy: the default applies", "/hello", 200)
                .bearer(&keys.defaulted)
                .body("hello, defaulted")
                .key_rate(100, 3600, r, 36 * u64::from(30 - r)),
        );
    }
    cases.push(
        Case::new("no policy: the default's burst is exhausted", "/hello", 429)
            .bearer(&keys.defaulted)
            .too_many("key", 100, 3600, 36, 30 * 36),
    );

    // Unlimited: never limited, whatever the default; no RateLimit fields.
    for _ in 0..40 {
        cases.push(
            Case::new("unlimited key is never limited", "/hello", 200)
                .bearer(&keys.unlimited)
                .body("hello, unlimited")
                .no_header("ratelimit")
                .no_header("ratelimit-policy"),
        );
    }

    // 1 000 wrong secrets for the limited key's id, from one client: 20 are checked (the
    // failed-attempts burst), then the client is refused before any hashing or store access.
    for _ in 0..20 {
        cases.push(
            Case::new("attacker: wrong secret for a known id", "/hello", 401)
                .bearer(&keys.limited_wrong_secret)
                .peer(attacker)
                .invalid_token(WrongSecret),
        );
    }
    for _ in 20..1000 {
        cases.push(
            Case::new("attacker: locked out after 20 failures", "/hello", 429)
                .bearer(&keys.limited_wrong_secret)
                .peer(attacker)
                .too_many("failures", 10, 60, 6, 120)
                .store_calls(0),
        );
    }
    cases.push(
        Case::new(
            "the owner's allowance is untouched by 1 000 failures",
            "/hello",
            200,
        )
        .bearer(&keys.limited)
        .key_rate(5, 1, 3, 1),
    );
    cases.push(
        Case::new(
            "a locked-out client is refused even with a valid key",
            "/hello",
            429,
        )
        .bearer(&keys.unlimited)
        .peer(attacker)
        .too_many("failures", 10, 60, 6, 120)
        .store_calls(0),
    );
    cases.push(
        Case::new(
            "X-Forwarded-For from an untrusted peer is ignored",
            "/hello",
            429,
        )
        .bearer(&keys.unlimited)
        .header("x-forwarded-for", "203.0.113.9")
        .peer(attacker)
        .too_many("failures", 10, 60, 6, 120),
    );
    let proxy: &'static str = "192.0.2.254:443";
    cases.push(
        Case::new(
            "trusted proxy: X-Forwarded-For names the locked-out client",
            "/hello",
            429,
        )
        .bearer(&keys.unlimited)
        .header("x-forwarded-for", "198.51.100.7")
        .peer(proxy)
        .too_many("failures", 10, 60, 6, 120),
    );
    cases.push(
        Case::new(
            "trusted proxy: another client behind it is not blamed",
            "/hello",
            200,
        )
        .bearer(&keys.unlimited)
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
        .peer(proxy)
        .body("hello, unlimited"),
    );
    cases.push(
        Case::new(
            "trusted proxy without X-Forwarded-For: the proxy is the client",
            "/hello",
            200,
        )
        .bearer(&keys.unlimited)
        .peer(proxy)
        .body("hello, unlimited"),
    );
    cases.push(
        Case::new("6 s later the attacker may try once more", "/hello", 401)
            .bearer(&keys.limited_wrong_secret)
            .peer(attacker)
            .after(Duration::from_secs(6))
            .invalid_token(WrongSecret),
    );
    cases.push(
        Case::new("and is locked out again at once", "/hello", 429)
            .bearer(&keys.limited_wrong_secret)
            .peer(attacker)
            .too_many("failures", 10, 60, 6, 120),
    );
    cases
}

/// Checks `reply` (with `calls` store calls during the request) against `case`; the error lists
/// every mismatch.
///
/// # Errors
/// A description of what differs.
pub fn check(case: &Case, reply: &Reply, calls: usize) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut expect = |what: &str, got: String, want: String| {
        if got != want {
            errors.push(format!("{what}: got {got}, want {want}"));
        }
    };
    expect(
        "status",
        reply.status.as_u16().to_string(),
        case.status.to_string(),
    );
    expect(
        "WWW-Authenticate",
        format!("{:?}", reply.www_authenticate()),
        format!("{:?}", case.www_authenticate),
    );
    expect(
        "problem type",
        format!("{:?}", reply.problem_type()),
        format!("{:?}", case.problem),
    );
    expect(
        "reason",
        format!(
            "{:?}",
            reply.rejection.as_ref().map(keygate::Rejection::reason)
        ),
        format!("{:?}", case.reason),
    );
    if let Some(body) = case.body {
        expect("body", reply.body.clone(), body.to_owned());
    }
    if case.problem.is_some() {
        expect(
            "content-type",
            format!("{:?}", reply.header("content-type")),
            format!("{:?}", Some("application/problem+json")),
        );
        expect(
            "cache-control",
            format!("{:?}", reply.header("cache-control")),
            format!("{:?}", Some("no-store")),
        );
        let status = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|json| json.get("status").and_then(serde_json::Value::as_u64));
        expect(
            "body status",
            format!("{status:?}"),
            format!("{:?}", Some(case.status)),
        );
    }
    if let Some(expected) = case.store_calls {
        expect("store calls", calls.to_string(), expected.to_string());
    }
    for (name, value) in &case.headers_out {
        expect(
            name,
            format!("{:?}", reply.header(name)),
            format!("{:?}", value.as_deref()),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The gRPC code a client must see for a case's HTTP status. Two credentials (400) are
/// `UNAUTHENTICATED`, as `keygate-tonic` documents.
///
/// # Panics
/// For a status no case expects.
#[must_use]
pub fn grpc_code(status: u16) -> tonic::Code {
    use tonic::Code;
    match status {
        200 => Code::Ok,
        400 | 401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        other => panic!("no gRPC code for HTTP {other}"),
    }
}

/// Checks a gRPC `reply` (with `calls` store calls during the call) against `case`: the code
/// ([`grpc_code`]), the message (the problem's client-safe detail, so every invalid key reads
/// the same), the answer, the store calls, the pinned headers as metadata, and on
/// `RESOURCE_EXHAUSTED` a `RetryInfo` delay equal to `retry-after`. The rejection reason, which
/// a client cannot see, is checked in the audit event ([`check_audit_grpc`]).
///
/// # Errors
/// A description of what differs.
pub fn check_grpc(case: &Case, reply: &GrpcReply, calls: usize) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut expect = |what: &str, got: String, want: String| {
        if got != want {
            errors.push(format!("{what}: got {got}, want {want}"));
        }
    };
    let code = grpc_code(case.status);
    expect("code", format!("{:?}", reply.code), format!("{code:?}"));
    let message = case.reason.map_or("", |r| r.problem().detail());
    expect("message", reply.message.clone(), message.to_owned());
    if case.status == 200 {
        expect(
            "answered",
            reply.body.is_some().to_string(),
            "true".to_owned(),
        );
    }
    if let Some(body) = case.body {
        expect(
            "body",
            format!("{:?}", reply.body.as_deref()),
            format!("{:?}", Some(body)),
        );
    }
    if let Some(expected) = case.store_calls {
        expect("store calls", calls.to_string(), expected.to_string());
    }
    for (name, value) in &case.headers_out {
        expect(
            name,
            format!("{:?}", reply.header(name)),
            format!("{:?}", value.as_deref()),
        );
    }
    let retry_after = reply
        .header("retry-after")
        .and_then(|secs| secs.parse::<u64>().ok())
        .map(Duration::from_secs);
    let want_retry =
        if code == tonic::Code::ResourceExhausted && case.reason != Some(Reason::QuotaExhausted) {
            // A rate limit's 429 always has a Retry-After: the RetryInfo must be there and say the
            // same.
            Some(retry_after.unwrap_or(Duration::MAX))
        } else {
            // A quota's has one only when the quota refills (the case pins the header): the
            // RetryInfo says the same, or is absent with it.
            retry_after.filter(|_| code == tonic::Code::ResourceExhausted)
        };
    expect(
        "RetryInfo delay",
        format!("{:?}", reply.retry_delay),
        format!("{want_retry:?}"),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Whether two frameworks answered alike: status, body, rejection reason and the headers a
/// client reads (`WWW-Authenticate`, `Content-Type`, `Cache-Control`, `Retry-After`,
/// `RateLimit-Policy`, `RateLimit`).
///
/// # Errors
/// A description of what differs.
pub fn same_answer(a: &Reply, b: &Reply) -> Result<(), String> {
    let view = |r: &Reply| {
        (
            r.status,
            r.body.clone(),
            r.rejection.as_ref().map(keygate::Rejection::reason),
            r.www_authenticate().map(str::to_owned),
            r.header("content-type").map(str::to_owned),
            r.header("cache-control").map(str::to_owned),
            ["retry-after", "ratelimit-policy", "ratelimit"]
                .map(|h| r.header(h).map(str::to_owned)),
        )
    };
    if view(a) == view(b) {
        Ok(())
    } else {
        Err(format!("{:?} != {:?}", view(a), view(b)))
    }
}

/// `key` with `text` inserted at byte `at`.
fn inserted(key: &str, at: usize, text: &str) -> String {
    format!("{}{text}{}", &key[..at], &key[at..])
}

/// `key` with the first letter of its secret replaced by `text`.
fn replaced_letter(key: &str, text: &str) -> String {
    let at = secret_letter(key);
    format!("{}{text}{}", &key[..at], &key[at + 1..])
}

/// `key` with the case of the first letter of its secret flipped.
fn flip_case(key: &str) -> String {
    let at = secret_letter(key);
    let mut bytes = key.as_bytes().to_vec();
    bytes[at] ^= 0x20;
    String::from_utf8(bytes).unwrap()
}

/// The byte offset of the first ASCII letter of `key`'s secret (the last 36 characters are the
/// secret and checksum).
fn secret_letter(key: &str) -> usize {
    let start = key.len() - 36;
    start
        + key.as_bytes()[start..]
            .iter()
            .position(u8::is_ascii_alphabetic)
            .unwrap_or_else(|| panic!("a secret without letters"))
}
