//! Command-line syntax (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keygate::quota::Quota;
use keygate::rate::{InvalidNamedLimit, InvalidRatePolicy, LimitName, RateLimit};

const AFTER_HELP: &str = "\
Examples:
  keygate create --name billing --owner team-billing --scope invoices:read
  KEY=$(keygate create --name ci --expires-in 30d)      # the key alone, when piped
  keygate list --state active
  keygate limit 4fT0qKb2mZ9x --rate '100/1s burst 200'
  keygate limits 4fT0qKb2mZ9x writes=10/1s reads=100/1s
  keygate rotate 4fT0qKb2mZ9x --grace 24h
  keygate revoke 4fT0qKb2mZ9x
  keygate audit --key 4fT0qKb2mZ9x --outcome denied --since 1h
  keygate usage --days 7
  keygate peppers                                        # keys per pepper version
  keygate create --admin --name ops                      # a key for the admin API
  keygate serve --listen 127.0.0.1:8080                  # the admin API and web console on this store
  keygate scan --git .                                   # this deployment's keys in files and history

Environment:
  KEYGATE_DATABASE_URL  sqlite://keygate.db (default) or postgres://user@host/db
  KEYGATE_PEPPER        VERSION:SECRET[,VERSION:SECRET...], current first (see docs/security.md),
                        or `development` for the public development pepper. create and rotate
                        need one, except on a development store
  KEYGATE_PREFIX        prefix of new keys (default: the one the key store recorded, else kg);
                        one that differs from the store's is refused
  KEYGATE_ENVIRONMENT   environment of new keys (create --environment): one the key store
                        records, like live or test; default: the store's default environment
  KEYGATE_ACTOR         who makes changes, for the audit trail (default: $USER)
  KEYGATE_REDIS_URL     publish every change to the services' Redis (cache invalidation)
  KEYGATE_REDIS_PREFIX  the services' Redis prefix (default keygate)

Exit codes: 0 ok, 1 usage or invalid input, 2 key or owner not found, 3 key store unavailable,
4 conflict with the key's or owner's state, 5 key store schema newer than this keygate, 6 refused by the
key store's settings: no pepper given, a pepper that is not the one the store's keys were made
with, or a prefix that is not the store's (nothing was written), 7 refused by the deployment's
lifetime policy (`keygate policy show`). `scan` exits 1 when it finds an active key.
A change that could not be published to Redis still exits 0, with a warning on stderr.";

/// Manage API keys: create, name, scope, rate-limit, rotate, revoke and list them.
///
/// Keys are shown once, at creation or rotation; the store keeps only a peppered digest.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, after_help = AFTER_HELP, max_term_width = 100)]
pub(crate) struct Cli {
    /// Key store: sqlite://PATH (created if missing) or postgres://…
    #[arg(
        long,
        env = "KEYGATE_DATABASE_URL",
        default_value = "sqlite://keygate.db",
        global = true
    )]
    pub(crate) database_url: String,

    /// Read peppers from this file instead of KEYGATE_PEPPER (same format).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) pepper_file: Option<PathBuf>,

    /// Use the public development pepper: its keys protect nothing. A new store becomes a
    /// development store, which refuses real peppers from then on (on a development store
    /// the CLI uses it without this flag).
    #[arg(long, global = true, conflicts_with = "pepper_file")]
    pub(crate) development_pepper: bool,

    /// Prefix of new keys (the deployment's key format). Default: the prefix the key store
    /// recorded (at a service's first start, or the first `create`), else kg. A prefix that
    /// differs from the store's is refused.
    #[arg(long, env = "KEYGATE_PREFIX", global = true)]
    pub(crate) prefix: Option<String>,

    /// Who is making changes, recorded with each change in the audit trail (default: the
    /// KEYGATE_ACTOR variable, else the USER variable).
    #[arg(long, env = "KEYGATE_ACTOR", global = true, value_name = "NAME")]
    pub(crate) actor: Option<String>,

    /// Redis that services subscribe to for cache invalidation (redis://HOST[:PORT][/DB]):
    /// every change is then published there, so services drop their cached copy at once.
    #[arg(long, env = "KEYGATE_REDIS_URL", global = true, value_name = "URL")]
    pub(crate) redis_url: Option<String>,

    /// The services' Redis prefix: changes are published on the channel PREFIX:invalidate.
    #[arg(
        long,
        env = "KEYGATE_REDIS_PREFIX",
        default_value = "keygate",
        global = true,
        value_name = "PREFIX"
    )]
    pub(crate) redis_prefix: String,

    /// Machine-readable output: one JSON object (or one per line for lists).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the key store's schema (other commands do it on an empty store).
    Migrate,
    /// Create a key and print it, once.
    #[command(after_help = "\
Examples:
  keygate create --name billing --owner team-billing --scope invoices:read --scope invoices:write
  keygate create --name partner --expires-in 90d --allow-ip 203.0.113.0/24 --meta tier=gold
  keygate create --name batch --rate 10000/1d
  keygate create --name reports --quota 10000/day          # at most 10000 a UTC day
  keygate create --name trial --quota 'credits 500 refill 500 every 1d'
  keygate create --name app --limit writes=10/1s --limit 'reads=100/1s burst 200'
  keygate create --name ci --environment test   # a test key (prefix recorded for test)
  KEY=$(keygate create --name ci)     # when stdout is not a terminal, only the key is printed")]
    Create(CreateArgs),
    /// List keys (without secrets).
    #[command(after_help = "\
Examples:
  keygate list
  keygate list --owner team-billing --state active
  keygate list --search billing --json
  keygate list --environment test
  keygate list --expiring-within 7d")]
    List(ListArgs),
    /// Show one key's details (never its secret).
    Show(IdArg),
    /// Rename a key.
    #[command(after_help = "Example:\n  keygate rename 4fT0qKb2mZ9x \"billing (prod)\"")]
    Rename {
        /// The key's id (the 12 characters after the prefix).
        id: String,
        /// The new name.
        new_name: String,
    },
    /// Add or remove scopes.
    #[command(
        after_help = "Example:\n  keygate scopes 4fT0qKb2mZ9x --add orders:read --remove orders:write"
    )]
    Scopes(ScopesArgs),
    /// Set or clear a key's expiry.
    #[command(after_help = "\
Examples:
  keygate expire 4fT0qKb2mZ9x --in 7d
  keygate expire 4fT0qKb2mZ9x --at 2027-01-31T00:00:00Z
  keygate expire 4fT0qKb2mZ9x --never")]
    Expire(ExpireArgs),
    /// Set a key's rate limit, make it unlimited, or go back to the services' default.
    #[command(after_help = "\
Examples:
  keygate limit 4fT0qKb2mZ9x --rate '100/1s burst 200'   # 100 a second, bursts of 200
  keygate limit 4fT0qKb2mZ9x --rate 10000/1d
  keygate limit 4fT0qKb2mZ9x --rate unlimited            # never limited, whatever the default
  keygate limit 4fT0qKb2mZ9x --rate default              # the services' default applies

A policy is <requests>/<period>[ burst <n>], the period a count and a unit (s, m, h or d);
quote it when it has a burst. Without a burst, the burst is the request count.")]
    Limit(LimitArgs),
    /// Show what a key's quota has left; set or clear the quota: how much it may use per UTC
    /// day or month, or a balance of credits that refills on schedule; or add credits to it.
    #[command(after_help = "\
Examples:
  keygate quota 4fT0qKb2mZ9x                  # what its quota (and its owner's) has left
  keygate quota 4fT0qKb2mZ9x --quota 10000/day
  keygate quota 4fT0qKb2mZ9x --quota 1000000/month
  keygate quota 4fT0qKb2mZ9x --quota 'credits 500 refill 500 every 1d'
  keygate quota 4fT0qKb2mZ9x --quota none     # no quota of its own (its owner's still applies)
  keygate quota 4fT0qKb2mZ9x --add-credits 1000   # top up a credits balance by 1000

A quota is <n>/<minute|hour|day|month> (calendar periods in UTC) or
credits <n>[ refill <n> every <count><s|m|h|d>]; see docs/quotas.md.
--add-credits needs a credits quota on the key; the credits reach the services as any
change does, and are added to the balance once.
Without --quota or --add-credits, the balance is read from the counters the services'
in-process meters save in the store (each at most a second behind); services that count
on a shared Redis meter are read with --redis-meter.")]
    Quota(QuotaArgs),
    /// Set or remove a key's named limits: rate limits that only the routes naming them apply
    /// (the other named limits stay as they are).
    #[command(after_help = "\
Examples:
  keygate limits 4fT0qKb2mZ9x writes=10/1s                  # set one (the others stay)
  keygate limits 4fT0qKb2mZ9x 'reads=100/1s burst 200' exports=5/1h
  keygate limits 4fT0qKb2mZ9x bulk=unlimited                # never limited under bulk
  keygate limits 4fT0qKb2mZ9x writes=none                   # remove one
  keygate limits 4fT0qKb2mZ9x --clear                       # remove them all

A route chooses the limit it applies by name, with RouteLimit::new(\"writes\") (tower and
axum) or keygate_actix::RouteLimit. The key's own limit of that name applies, else the
services' default for the name, if any; its owner's limit of that name (keygate owners update
--limit) applies on top, and the tighter wins (see docs/guide.md, Named limits). A name is 1 to
32 lowercase letters, digits, '_' or '-', starting with a letter (not key, failures or quota);
a policy is <requests>/<period>[ burst <n>] or unlimited. At most 16 per key.")]
    Limits(LimitsArgs),
    /// Switch a key off (reversible with `enable`).
    Disable(IdArg),
    /// Switch a disabled key back on.
    Enable(IdArg),
    /// Revoke a key for good (kept for audit; it never authenticates again), or every key of
    /// an owner (--owner).
    #[command(after_help = "\
Examples:
  keygate revoke 4fT0qKb2mZ9x
  keygate revoke --owner acme-corp          # every key of the owner, in one transaction
  keygate revoke --owner acme-corp --yes    # without asking (required when not on a terminal)")]
    Revoke(RevokeArgs),
    /// Manage owners: the customers, teams or applications keys belong to, each with a name,
    /// metadata and a rate limit shared by all its keys.
    #[command(
        subcommand,
        after_help = "\
Examples:
  keygate owners create acme-corp --name \"ACME Corp\" --meta plan=gold --rate-limit 10/1m
  keygate create --name ci --owner acme-corp     # unknown owners are created, named after their id
  keygate owners list
  keygate owners show acme-corp                  # with its number of keys
  keygate owners update acme-corp --rate-limit none
  keygate owners update acme-corp --quota 100000/month   # shared by all its keys
  keygate owners update acme-corp --quota none
  keygate owners update acme-corp --quota 'credits 5000'
  keygate owners quota acme-corp                 # what the shared quota has left
  keygate owners quota acme-corp --add-credits 1000   # top up the shared credit balance
  keygate owners update acme-corp --limit writes=100/1s --limit reads=none   # named limits
  keygate owners disable acme-corp               # every key of the owner; `enable` undoes it
  keygate revoke --owner acme-corp               # every key of the owner, for good
  keygate usage --owner acme-corp

An owner's rate limit is shared by all its keys, on top of each key's own limit: a request
must pass both, so the tighter wins (10/1m shared by three keys allows 10 a minute in all).
Its named limits (--limit NAME=POLICY) are shared the same way, each on the routes naming it."
    )]
    Owners(OwnersCommand),
    /// Replace a key: a new key with the same name, owner, scopes and restrictions; the old one
    /// keeps working for the grace period.
    #[command(after_help = "\
Examples:
  keygate rotate 4fT0qKb2mZ9x               # old key works 24 more hours
  keygate rotate 4fT0qKb2mZ9x --grace 0s    # old key revoked now")]
    Rotate(RotateArgs),
    /// Delete a key for good (its id is never reused).
    #[command(after_help = "Example:\n  keygate delete 4fT0qKb2mZ9x --yes")]
    Delete(DeleteArgs),
    /// Show the audit trail: requests allowed and denied, and changes to keys.
    #[command(after_help = "\
Examples:
  keygate audit                                   # the 50 latest events
  keygate audit --key 4fT0qKb2mZ9x --outcome denied --since 1h
  keygate audit --owner acme-corp --since 1d     # events of every key of the owner
  keygate audit --reason wrong_secret --since 7d --json
  keygate audit --follow                          # then new events as they come (Ctrl-C stops)

Events are written by services whose verifier uses the store's audit sink, and by every
change made with this tool. Oldest first; --json prints one object per line.")]
    Audit(AuditArgs),
    /// Show requests per key per day (allowed and denied), with a bar per key.
    #[command(after_help = "\
Examples:
  keygate usage
  keygate usage --key 4fT0qKb2mZ9x --days 7
  keygate usage --owner acme-corp               # its keys, and the owner's total per day
  keygate usage --json")]
    Usage(UsageArgs),
    /// Show keys per pepper version and the pepper fingerprints the store recorded, so an old
    /// pepper can be retired once no key is left under it; and the store's key prefix.
    #[command(after_help = "\
Examples:
  keygate peppers
  KEYGATE_PEPPER=\"2:$NEW,1:$OLD\" keygate peppers   # also checks the peppers given

A key under an older version moves to the current one the first time a service (whose
KEYGATE_PEPPER has both) verifies it. Once an old version has no keys left, remove it.")]
    Peppers,
    /// Serve the admin API (JSON, OpenAPI at /openapi.json) and its web console (/console) on
    /// the key store, until interrupted. Callers need an admin key (`keygate create --admin`).
    #[command(after_help = "\
Examples:
  keygate create --admin --name ops          # the first admin key
  keygate serve --listen 127.0.0.1:8080
  curl -H \"Authorization: Bearer $KEY\" http://127.0.0.1:8080/keys
  # or open http://127.0.0.1:8080/console in a browser and sign in with the admin key

It needs the deployment's pepper (KEYGATE_PEPPER) to check admin keys and mint new ones. It
listens on loopback only unless --allow-remote is given: put it behind a TLS-terminating proxy
on a private network (see docs/admin.md).")]
    Serve(ServeArgs),
    /// Find this deployment's keys in files, directories and git history (`--git`): each find
    /// by file and line, with the key's id, name, owner and state; the secret masked. Exits 1
    /// when an active key is found.
    #[command(after_help = "\
Examples:
  keygate scan .                        # files under the current directory (.git skipped)
  keygate scan --git .                  # and every line any commit ever added
  keygate scan --rules gitleaks > keygate.gitleaks.toml
  keygate scan --rules trufflehog > keygate.trufflehog.yaml

Only tokens of the deployment's key format (the store's prefix) with a valid checksum are
reported. With the deployment's pepper (KEYGATE_PEPPER; on a development store, without) the
secret is checked too, so a token that only borrows a key's id is told apart. An active key found
means: rotate or revoke it (keygate rotate ID / keygate revoke ID), then remove it from the
files and, for --git finds, from the history.")]
    Scan(ScanArgs),
    /// Show, set or clear the deployment's key lifetime policy (kept in the key store, so
    /// every service, `keygate serve` and this tool apply the same one).
    #[command(
        subcommand,
        after_help = "\
Examples:
  keygate policy show
  keygate policy set --require-expiry --default-lifetime 90d --max-lifetime 365d --max-idle 30d
  keygate policy clear

create, expire and rotate go through the policy: a key without expiry gets the default lifetime
(without a default, --require-expiry or --max-lifetime refuse it), an expiry beyond the maximum
lifetime is refused (exit 7, naming the rule). With --max-idle, `keygate serve` (and any
service running the idle sweep) disables keys unused for longer, audited (see docs/policy.md)."
    )]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the policy.
    Show,
    /// Replace the policy with the rules given (rules not given are off).
    Set(PolicySetArgs),
    /// Remove every rule.
    Clear,
}

#[derive(Debug, Args)]
pub(crate) struct PolicySetArgs {
    /// Every key must have an expiry (given, or the default lifetime).
    #[arg(long)]
    pub(crate) require_expiry: bool,
    /// The lifetime of a key created (or rotated, or whose expiry is cleared) without one:
    /// 90d, 12h, …
    #[arg(long, value_name = "DURATION")]
    pub(crate) default_lifetime: Option<String>,
    /// The longest lifetime a key may be given (keys without expiry are refused unless there
    /// is a default lifetime).
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_lifetime: Option<String>,
    /// Disable keys unused for longer than this (run by `keygate serve`'s idle sweep).
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_idle: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Files and directories to scan (directories recursively; symbolic links not followed).
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Also scan the history of the git repository each PATH is in: every line added by any
    /// commit on any branch or tag.
    #[arg(long)]
    pub(crate) git: bool,
    /// Print detection rules for this deployment's keys instead of scanning.
    #[arg(long, value_enum, value_name = "TOOL", conflicts_with_all = ["paths", "git"])]
    pub(crate) rules: Option<RulesArg>,
}

/// A secret scanner to print rules for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RulesArg {
    /// gitleaks (TOML).
    Gitleaks,
    /// TruffleHog custom detectors (YAML).
    Trufflehog,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address and port to listen on, like 127.0.0.1:8080 ([::1]:8080 for IPv6).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Allow listening on an address that is not loopback. The API speaks plain HTTP: only
    /// behind a TLS-terminating proxy on a network you trust.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Send notices (expiring soon, idle-disabled, canary tripped) to this webhook, signed
    /// with KEYGATE_WEBHOOK_SECRET (at least 16 bytes; required with it). Without it, notices
    /// are only logged.
    #[arg(long, env = "KEYGATE_WEBHOOK_URL", value_name = "URL")]
    pub(crate) webhook_url: Option<String>,
    /// Notice active keys that expire within DURATION (7d, 24h, …), once per key and expiry.
    /// Default with --webhook-url: 7d; 0s turns it off.
    #[arg(long, value_name = "DURATION")]
    pub(crate) expiring_within: Option<String>,
    /// How often the sweeps run (expiring soon; idle keys, when the lifetime policy has a
    /// maximum idle time).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub(crate) sweep_interval: String,
    /// Count quotas in the services' Redis quota meter (at --redis-url, under
    /// --redis-prefix), as services that share one do: admin keys' quotas are charged there,
    /// and GET /keys/{id}/quota reads balances there instead of the store's saved counters.
    #[arg(long)]
    pub(crate) redis_meter: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutcomeArg {
    Allowed,
    Denied,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only events of this key (its id).
    #[arg(long, value_name = "ID")]
    pub(crate) key: Option<String>,
    /// Only events of the keys of this owner (its id).
    #[arg(long, value_name = "OWNER", conflicts_with = "key")]
    pub(crate) owner: Option<String>,
    /// Only requests with this outcome.
    #[arg(long, value_enum)]
    pub(crate) outcome: Option<OutcomeArg>,
    /// Only denied requests with this reason: wrong_secret, revoked, expired, rate_limited, …
    #[arg(long, value_name = "REASON")]
    pub(crate) reason: Option<String>,
    /// Only events of this action: request, created, revoked, rotated, denials,
    /// policy_changed, …
    #[arg(long, value_name = "ACTION")]
    pub(crate) action: Option<String>,
    /// Only events of the last DURATION: 30m, 1h, 7d, …
    #[arg(long, value_name = "DURATION")]
    pub(crate) since: Option<String>,
    /// At most this many events (the latest ones; 1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
    /// After the events, keep printing new ones, checking every second, until interrupted.
    #[arg(long)]
    pub(crate) follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// Only this key (its id).
    #[arg(long, value_name = "ID")]
    pub(crate) key: Option<String>,
    /// Only the keys of this owner (its id), with the owner's total per day.
    #[arg(long, value_name = "OWNER", conflicts_with = "key")]
    pub(crate) owner: Option<String>,
    /// Days to show, today included (1 to 3660).
    #[arg(long, default_value_t = 30)]
    pub(crate) days: u32,
}

#[derive(Debug, Args)]
pub(crate) struct IdArg {
    /// The key's id (the 12 characters after the prefix).
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Human-readable name (1 to 200 characters).
    #[arg(long)]
    pub(crate) name: String,
    /// The id of the owner (customer, team or application) the key belongs to; an owner
    /// the store does not know yet is created, named after its id (see `keygate owners`).
    #[arg(long)]
    pub(crate) owner: Option<String>,
    /// A scope to grant, like orders:read or orders:* (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// Expire after this long: 90s, 15m, 24h, 30d, …
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    pub(crate) expires_in: Option<String>,
    /// Expire at this time (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub(crate) expires_at: Option<String>,
    /// Metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// Only accept the key from this client IP range, like 10.0.0.0/8 (repeatable).
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub(crate) allow_ip: Vec<String>,
    /// Rate limit: a policy like 100/1s, "100/1s burst 200" or 10000/1d, or unlimited
    /// (without it, or with default, the services' default applies).
    #[arg(long, value_name = "POLICY")]
    pub(crate) rate: Option<RateSetting>,
    /// The key's quota: 10000/day, 1000000/month or "credits 500 refill 500 every 1d" (see
    /// `keygate quota --help`).
    #[arg(long, value_name = "QUOTA")]
    pub(crate) quota: Option<QuotaSetting>,
    /// A named limit NAME=POLICY (or "NAME: POLICY"), like writes=10/1s or
    /// "reads=100/1s burst 200"; POLICY may be unlimited (repeatable; see
    /// `keygate limits --help`).
    #[arg(long = "limit", value_name = "NAME=POLICY")]
    pub(crate) limits: Vec<LimitEntry>,
    /// An admin key for the admin API (`keygate serve`, keygate-admin): grants
    /// keygate:admin:read and keygate:admin:write, besides any --scope.
    #[arg(long)]
    pub(crate) admin: bool,
    /// With --admin: a read-only admin key (keygate:admin:read only).
    #[arg(long, requires = "admin")]
    pub(crate) read_only: bool,
    /// A canary: a decoy key to plant where a real key could leak. It is never accepted: a
    /// request with it gets exactly an unknown key's 401, and raises a high-severity audit
    /// event (reason canary) and metric with the client address and route. Not with --admin.
    #[arg(long, conflicts_with = "admin")]
    pub(crate) canary: bool,
    /// The environment of the key, like live or test: one the key store records (a service
    /// whose keyring has environments records them at its first start); its prefix is the
    /// key's. Default: the store's default environment (the prefix it records).
    #[arg(long, env = "KEYGATE_ENVIRONMENT", value_name = "NAME")]
    pub(crate) environment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    Active,
    Disabled,
    Revoked,
    Expired,
    All,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only keys of this owner.
    #[arg(long)]
    pub(crate) owner: Option<String>,
    /// Only keys in this state.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) state: StateArg,
    /// Only keys whose name contains this text (case-insensitive).
    #[arg(long)]
    pub(crate) search: Option<String>,
    /// Only keys of this environment (one the key store records, like live or test).
    #[arg(long, value_name = "NAME")]
    pub(crate) environment: Option<String>,
    /// Only active keys that expire within DURATION from now (7d, 24h, …), soonest first.
    #[arg(long, value_name = "DURATION", conflicts_with = "state")]
    pub(crate) expiring_within: Option<String>,
    /// At most this many keys.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["add", "remove"])))]
pub(crate) struct ScopesArgs {
    /// The key's id.
    pub(crate) id: String,
    /// A scope to grant (repeatable).
    #[arg(long, value_name = "SCOPE")]
    pub(crate) add: Vec<String>,
    /// A scope to take away (repeatable).
    #[arg(long, value_name = "SCOPE")]
    pub(crate) remove: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["in_", "at", "never"])))]
pub(crate) struct ExpireArgs {
    /// The key's id.
    pub(crate) id: String,
    /// Expire after this long from now: 90s, 15m, 24h, 7d, …
    #[arg(long = "in", id = "in_", value_name = "DURATION")]
    pub(crate) in_: Option<String>,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
    /// Never expire.
    #[arg(long)]
    pub(crate) never: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// The key's id.
    pub(crate) id: String,
    /// A policy like 100/1s, "100/1s burst 200" or 10000/1d; unlimited; or default (the
    /// key follows the services' default).
    #[arg(long, value_name = "POLICY")]
    pub(crate) rate: RateSetting,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").args(["quota", "add_credits"])))]
pub(crate) struct QuotaArgs {
    /// The key's id.
    pub(crate) id: String,
    /// A quota like 10000/day, 1000000/month or "credits 500 refill 500 every 1d"; or none.
    #[arg(long, value_name = "QUOTA")]
    pub(crate) quota: Option<QuotaSetting>,
    /// Add N credits to the key's credit balance (1 to 1000000000000; the key's own quota
    /// must be credits).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=keygate::quota::MAX_QUOTA))]
    pub(crate) add_credits: Option<u64>,
    /// Read the balance from the services' Redis quota meter (at --redis-url, under
    /// --redis-prefix) instead of the counters their in-process meters save in the store.
    #[arg(long, conflicts_with = "change")]
    pub(crate) redis_meter: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LimitsArgs {
    /// The key's id.
    pub(crate) id: String,
    /// NAME=POLICY sets the limit NAME (like writes=10/1s, "reads=100/1s burst 200" or
    /// bulk=unlimited); NAME=none removes it. Named limits not given stay as they are.
    #[arg(
        value_name = "NAME=POLICY",
        required_unless_present = "clear",
        conflicts_with = "clear"
    )]
    pub(crate) changes: Vec<LimitChange>,
    /// Remove all the key's named limits.
    #[arg(long)]
    pub(crate) clear: bool,
}

/// One `--limit NAME=POLICY` of `create` and `owners create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitEntry {
    pub(crate) name: LimitName,
    pub(crate) limit: RateLimit,
}

impl std::str::FromStr for LimitEntry {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        keygate::rate::parse_entry(text)
            .map(|(name, limit)| Self { name, limit })
            .map_err(|e| e.to_string())
    }
}

/// One change to a set of named limits: `NAME=POLICY` sets, `NAME=none` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitChange {
    pub(crate) name: LimitName,
    /// `None`: remove the limit.
    pub(crate) limit: Option<RateLimit>,
}

impl std::str::FromStr for LimitChange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some((name, policy)) = text.split_once([':', '='])
            && policy.trim().eq_ignore_ascii_case("none")
        {
            let name = name.parse().map_err(|e: InvalidNamedLimit| e.to_string())?;
            return Ok(Self { name, limit: None });
        }
        text.parse::<LimitEntry>().map(|entry| Self {
            name: entry.name,
            limit: Some(entry.limit),
        })
    }
}

/// What `--quota` says: a quota, or none (`none` removes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaSetting {
    None,
    Quota(Quota),
}

impl QuotaSetting {
    /// The value the record stores.
    pub(crate) fn quota(self) -> Option<Quota> {
        match self {
            Self::None => None,
            Self::Quota(quota) => Some(quota),
        }
    }
}

impl std::str::FromStr for QuotaSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        text.parse().map(Self::Quota).map_err(|e| match e {
            keygate::quota::InvalidQuota::Syntax => format!("{e}, or \"none\""),
            other => other.to_string(),
        })
    }
}

/// What `--rate` says: the key's own limit, or none (the services' default applies). `create`
/// takes `default` too, so that scripts can pass one value to either command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateSetting {
    Default,
    Own(RateLimit),
}

impl RateSetting {
    /// The value the key record stores.
    pub(crate) fn limit(self) -> Option<RateLimit> {
        match self {
            Self::Default => None,
            Self::Own(limit) => Some(limit),
        }
    }
}

impl std::str::FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("default") {
            return Ok(Self::Default);
        }
        text.parse().map(Self::Own).map_err(|e| match e {
            // The library's message offers policies and "unlimited"; `default` is the CLI's word.
            InvalidRatePolicy::Syntax => format!("{e}, or \"default\""),
            other => other.to_string(),
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The key's id.
    pub(crate) id: String,
    /// How long the old key keeps working (0s revokes it at once; at most 30d).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub(crate) grace: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The key's id.
    pub(crate) id: String,
    /// Do not ask for confirmation (required when not on a terminal).
    #[arg(long)]
    pub(crate) yes: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "owner"])))]
pub(crate) struct RevokeArgs {
    /// The key's id (the 12 characters after the prefix).
    pub(crate) id: Option<String>,
    /// Revoke every key of this owner (by its id) instead, in one transaction.
    #[arg(long, value_name = "OWNER", conflicts_with = "id")]
    pub(crate) owner: Option<String>,
    /// With --owner: do not ask for confirmation (required when not on a terminal).
    #[arg(long, requires = "owner")]
    pub(crate) yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OwnersCommand {
    /// Create an owner.
    Create(OwnerCreateArgs),
    /// List owners.
    List(OwnersListArgs),
    /// Show one owner, with how many keys it has.
    Show(OwnerIdArg),
    /// Change an owner's name, metadata, rate limit, quota or named limits.
    Update(OwnerUpdateArgs),
    /// Show what an owner's shared quota has left, or add credits to its shared credit
    /// balance.
    #[command(after_help = "\
Examples:
  keygate owners quota acme-corp                       # what its keys may still spend
  keygate owners quota acme-corp --json
  keygate owners quota acme-corp --add-credits 1000    # top up the shared credit balance

--add-credits needs a credits quota on the owner (keygate owners update ID --quota
'credits N'); the credits reach every key of the owner as any change does, and are added to
the balance once. Without --add-credits, the balance is read from the counters the services'
in-process meters save in the store (each at most a second behind); services that count on a
shared Redis meter are read with --redis-meter.")]
    Quota(OwnerQuotaArgs),
    /// Delete an owner (refused while keys belong to it).
    Delete(OwnerIdArg),
    /// Disable every key of the owner that is active (reversible with `owners enable`).
    Disable(OwnerIdArg),
    /// Enable every disabled key of the owner (revoked keys stay revoked).
    Enable(OwnerIdArg),
}

#[derive(Debug, Args)]
pub(crate) struct OwnerIdArg {
    /// The owner's id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct OwnerCreateArgs {
    /// The owner's id, as keys name it (1 to 200 characters, no control characters).
    pub(crate) id: String,
    /// Human-readable name (default: the id).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// A rate limit shared by all the owner's keys: a policy like 10/1m or "100/1s burst 200".
    #[arg(long, value_name = "POLICY")]
    pub(crate) rate_limit: Option<OwnerRate>,
    /// A quota shared by all the owner's keys: 10000/day, 1000000/month or
    /// "credits 500 refill 500 every 1d".
    #[arg(long, value_name = "QUOTA")]
    pub(crate) quota: Option<QuotaSetting>,
    /// A named limit shared by all the owner's keys, NAME=POLICY like writes=100/1s
    /// (repeatable; see `keygate limits --help`).
    #[arg(long = "limit", value_name = "NAME=POLICY")]
    pub(crate) limits: Vec<LimitEntry>,
}

#[derive(Debug, Args)]
pub(crate) struct OwnerQuotaArgs {
    /// The owner's id.
    pub(crate) id: String,
    /// Add N credits to the owner's shared credit balance (1 to 1000000000000; the owner's
    /// quota must be credits).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=keygate::quota::MAX_QUOTA))]
    pub(crate) add_credits: Option<u64>,
    /// Read the balance from the services' Redis quota meter (at --redis-url, under
    /// --redis-prefix) instead of the counters their in-process meters save in the store.
    #[arg(long, conflicts_with = "add_credits")]
    pub(crate) redis_meter: bool,
}

#[derive(Debug, Args)]
pub(crate) struct OwnersListArgs {
    /// At most this many owners.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["name", "meta", "rate_limit", "quota", "limits"])))]
pub(crate) struct OwnerUpdateArgs {
    /// The owner's id.
    pub(crate) id: String,
    /// A new name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Metadata entry KEY=VALUE (repeatable): replaces the owner's whole metadata.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub(crate) meta: Vec<String>,
    /// A new shared rate limit (a policy like 10/1m), or none to remove it.
    #[arg(long, value_name = "POLICY")]
    pub(crate) rate_limit: Option<OwnerRate>,
    /// A new shared quota (10000/day, "credits 500 refill 500 every 1d"), or none to remove it.
    #[arg(long, value_name = "QUOTA")]
    pub(crate) quota: Option<QuotaSetting>,
    /// Set a shared named limit, NAME=POLICY like writes=100/1s, or remove one, NAME=none
    /// (repeatable; the owner's other named limits stay).
    #[arg(long = "limit", value_name = "NAME=POLICY")]
    pub(crate) limits: Vec<LimitChange>,
}

/// What an owner's `--rate-limit` says: a shared limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerRate {
    None,
    Limit(RateLimit),
}

impl OwnerRate {
    /// The value the owner record stores.
    pub(crate) fn limit(self) -> Option<RateLimit> {
        match self {
            Self::None | Self::Limit(RateLimit::Unlimited) => None,
            Self::Limit(limit) => Some(limit),
        }
    }
}

impl std::str::FromStr for OwnerRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        text.parse().map(Self::Limit).map_err(|e| match e {
            InvalidRatePolicy::Syntax => format!("{e}, or \"none\""),
            other => other.to_string(),
        })
    }
}
