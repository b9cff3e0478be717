//! Rendering records: tables for people, JSON for scripts. Never a secret or a digest, except the
//! new key printed once by `create` and `rotate`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets};
use keygate::quota::{QuotaBalance, QuotaLine, QuotaUsage};
use keygate::{KeyRecord, PlaintextKey};
use serde_json::{Value, json};

/// The environments the key store records, by prefix (see `StoreSettings::environments`).
pub(crate) type Environments = BTreeMap<String, String>;

static NO_ENVIRONMENTS: Environments = BTreeMap::new();

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output<'a> {
    json: bool,
    terminal: bool,
    /// Environment names by prefix, to name each key's.
    environments: &'a Environments,
}

impl<'a> Output<'a> {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            terminal: std::io::stdout().is_terminal(),
            environments: &NO_ENVIRONMENTS,
        }
    }

    /// The same output, naming keys' environments from `environments`.
    pub(crate) fn with_environments(self, environments: &Environments) -> Output<'_> {
        Output {
            json: self.json,
            terminal: self.terminal,
            environments,
        }
    }

    /// The environments the store records, by prefix.
    pub(crate) fn environments(self) -> &'a Environments {
        self.environments
    }

    /// The environment of a key of `prefix`, if the store records one.
    pub(crate) fn environment_of(self, prefix: &str) -> Option<&'a str> {
        self.environments.get(prefix).map(String::as_str)
    }

    pub(crate) fn record_json(self, record: &KeyRecord, now: SystemTime) -> Value {
        record_json(record, now, self.environment_of(&record.prefix))
    }

    pub(crate) fn is_json(self) -> bool {
        self.json
    }

    pub(crate) fn is_terminal(self) -> bool {
        self.terminal
    }

    /// Prints a line (ignoring a closed pipe, like `head` closing early).
    pub(crate) fn line(self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
    }

    /// Prints a JSON value on one line.
    pub(crate) fn json_line(self, value: &Value) {
        self.line(&value.to_string());
    }

    /// After a change: the record as JSON, or a one-line confirmation.
    pub(crate) fn changed(self, record: &KeyRecord, now: SystemTime, message: &str) {
        if self.json {
            self.json_line(&self.record_json(record, now));
        } else {
            self.line(message);
        }
    }

    /// A newly minted key, shown once: a framed block on a terminal, the key alone when piped,
    /// or a JSON object with `key` plus the record.
    pub(crate) fn new_key(
        self,
        record: &KeyRecord,
        key: &PlaintextKey,
        now: SystemTime,
        note: &str,
    ) {
        if self.json {
            let mut value = self.record_json(record, now);
            value["key"] = Value::String(key.expose_secret().to_owned());
            self.json_line(&value);
        } else if self.terminal {
            self.line(&format!("{note}\n"));
            self.line(&format!("    {}\n", key.expose_secret()));
            self.line(
                "This is the only time the key is shown: store it now, in a secret manager (not a chat, ticket or repository).",
            );
        } else {
            self.line(key.expose_secret());
        }
    }

    /// Keys as an aligned table, or one JSON object per line.
    pub(crate) fn list(self, records: &[KeyRecord], now: SystemTime) {
        if self.json {
            for record in records {
                self.json_line(&self.record_json(record, now));
            }
            return;
        }
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header([
                "ID",
                "ENVIRONMENT",
                "NAME",
                "OWNER",
                "SCOPES",
                "RATE LIMIT",
                "QUOTA",
                "LIMITS",
                "STATE",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            ]);
        for r in records {
            table.add_row([
                r.id.to_string(),
                self.environment_of(&r.prefix).unwrap_or("-").to_owned(),
                r.name.clone(),
                r.owner.clone().unwrap_or_else(|| "-".into()),
                scopes_text(r),
                rate_text(r),
                quota_text(r.quota.as_ref()),
                crate::limits::text(&r.limits),
                state_text(r, now),
                time_text(Some(r.created_at)),
                time_text(r.expires_at),
                time_text(r.last_used_at),
            ]);
        }
        self.line(&table.trim_fmt());
    }

    /// What a key's quotas have left (`keygate quota ID`), read from `source` (`store` or
    /// `redis`).
    pub(crate) fn balance(self, record: &KeyRecord, balance: &QuotaBalance, source: &str) {
        let owner = record.owner.as_deref();
        if self.json {
            let line = |line| line_json(balance, line);
            self.json_line(&json!({
                "id": record.id.as_str(),
                "owner": owner,
                "at": time_json(Some(balance.at)),
                "source": source,
                "key": balance.key.as_ref().map(line),
                "owner_quota": balance.owner.as_ref().map(line),
            }));
            return;
        }
        let id = &record.id;
        match &balance.key {
            Some(key) => self.line(&format!(
                "key {id} quota: {}: {}",
                granted_quota_text(record.quota.as_ref(), record.quota_granted),
                left_text(balance, key)
            )),
            None => self.line(&format!("key {id} quota: none of its own")),
        }
        if let (Some(owner), Some(shared)) = (owner, &balance.owner) {
            self.owner_line(owner, balance, shared);
        }
        if balance.key.is_some() || balance.owner.is_some() {
            self.source_note(source);
        }
    }

    /// An owner's shared quota balance (`keygate owners quota ID`), read from `source`.
    pub(crate) fn owner_balance(self, owner: &str, balance: &QuotaBalance, source: &str) {
        if self.json {
            self.json_line(&json!({
                "owner": owner,
                "at": time_json(Some(balance.at)),
                "source": source,
                "quota": balance.owner.as_ref().map(|line| line_json(balance, line)),
            }));
            return;
        }
        match &balance.owner {
            Some(shared) => {
                self.owner_line(owner, balance, shared);
                self.source_note(source);
            }
            None => self.line(&format!("owner {owner} quota: none")),
        }
    }

    /// `owner ID quota: QUOTA[, N credits added]: N left, …`.
    fn owner_line(self, owner: &str, balance: &QuotaBalance, shared: &(QuotaLine, QuotaUsage)) {
        self.line(&format!(
            "owner {owner} quota: {}: {}",
            granted_quota_text(Some(&shared.0.quota), shared.0.granted),
            left_text(balance, shared)
        ));
    }

    /// Where a balance was read, under it.
    fn source_note(self, source: &str) {
        self.line(match source {
            "redis" => "(read from the services' Redis quota meter)",
            _ => "(read from the counters the services save in the store: at most a second behind)",
        });
    }

    /// One key's details.
    pub(crate) fn show(self, record: &KeyRecord, now: SystemTime) {
        if self.json {
            self.json_line(&self.record_json(record, now));
            return;
        }
        let ips = if record.allowed_ips.is_empty() {
            "any".to_owned()
        } else {
            record
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut table = Table::new();
        table.load_preset(presets::NOTHING);
        let rows = [
            ("id", record.id.to_string()),
            ("prefix", record.prefix.clone()),
            (
                "environment",
                self.environment_of(&record.prefix)
                    .unwrap_or("-")
                    .to_owned(),
            ),
            ("name", record.name.clone()),
            ("owner", record.owner.clone().unwrap_or_else(|| "-".into())),
            ("state", record.state(now).as_str().to_owned()),
            (
                "canary",
                if record.canary {
                    "yes: never accepted; a use raises a high-severity audit event".into()
                } else {
                    "no".into()
                },
            ),
            ("scopes", scopes_text(record)),
            ("allowed IPs", ips),
            ("rate limit", rate_text(record)),
            (
                "quota",
                granted_quota_text(record.quota.as_ref(), record.quota_granted),
            ),
            ("limits", crate::limits::text(&record.limits)),
            (
                "metadata",
                Value::Object(record.metadata.clone()).to_string(),
            ),
            ("created", time_text(Some(record.created_at))),
            ("updated", time_text(Some(record.updated_at))),
            ("expires", time_text(record.expires_at)),
            ("disabled", time_text(record.disabled_at)),
            ("revoked", time_text(record.revoked_at)),
            ("last used", time_text(record.last_used_at)),
            (
                "rotated from",
                record
                    .rotated_from
                    .map_or_else(|| "-".into(), |id| id.to_string()),
            ),
        ];
        for (field, value) in rows {
            table.add_row([field.to_owned(), value]);
        }
        self.line(&table.trim_fmt());
    }
}

/// The key's state, marked `(canary)` for a canary.
fn state_text(record: &KeyRecord, now: SystemTime) -> String {
    let state = record.state(now).as_str();
    if record.canary {
        format!("{state} (canary)")
    } else {
        state.to_owned()
    }
}

fn scopes_text(record: &KeyRecord) -> String {
    if record.scopes.is_empty() {
        "-".into()
    } else {
        record
            .scopes
            .iter()
            .map(keygate::Scope::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The key's own rate limit, or `default` when the services' default applies.
pub(crate) fn rate_text(record: &KeyRecord) -> String {
    record
        .rate_limit
        .map_or_else(|| "default".into(), |limit| limit.to_string())
}

/// The key's quota with the credits top-ups added to a credits quota (`credits 500, 1000
/// credits added`).
pub(crate) fn granted_quota_text(quota: Option<&keygate::quota::Quota>, granted: u64) -> String {
    let text = quota_text(quota);
    match quota {
        Some(keygate::quota::Quota::Credits { .. }) if granted == 1 => {
            format!("{text}, 1 credit added")
        }
        Some(keygate::quota::Quota::Credits { .. }) if granted > 0 => {
            format!("{text}, {granted} credits added")
        }
        _ => text,
    }
}

/// `1 credit added` / `N credits added`, as a top-up's message says it.
pub(crate) fn credits_added(credits: u64) -> String {
    let noun = if credits == 1 { "credit" } else { "credits" };
    format!("{credits} {noun} added")
}

/// One balance line as JSON: the quota, the credits added, what is left and when it resets.
fn line_json(balance: &QuotaBalance, (line, usage): &(QuotaLine, QuotaUsage)) -> Value {
    json!({
        "quota": line.quota.to_string(),
        "granted": line.granted,
        "remaining": usage.remaining,
        "resets_at": time_json(usage.reset.map(|reset| balance.at + reset)),
    })
}

/// `N left, resets at …` (a period), `N left, next refill at …`, or `N left, never refilled`.
fn left_text(balance: &QuotaBalance, (line, usage): &(QuotaLine, QuotaUsage)) -> String {
    let when = usage.reset.map(|reset| time_text(Some(balance.at + reset)));
    match (line.quota, when) {
        (keygate::quota::Quota::Period { .. }, Some(at)) => {
            format!("{} left, resets at {at}", usage.remaining)
        }
        (_, Some(at)) => format!("{} left, next refill at {at}", usage.remaining),
        (_, None) => format!("{} left, never refilled", usage.remaining),
    }
}

/// A quota's text form, or `none`.
pub(crate) fn quota_text(quota: Option<&keygate::quota::Quota>) -> String {
    quota.map_or_else(|| "none".into(), ToString::to_string)
}

/// RFC 3339 in UTC to the second, or `-`.
pub(crate) fn time_text(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "-".into(),
        |at| humantime::format_rfc3339_seconds(at).to_string(),
    )
}

fn time_json(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |at| Value::String(time_text(Some(at))))
}

/// A record as JSON: every public fact, never the digest. `environment`: the one the store
/// records for the key's prefix (null when none).
pub(crate) fn record_json(record: &KeyRecord, now: SystemTime, environment: Option<&str>) -> Value {
    json!({
        "id": record.id.as_str(),
        "prefix": record.prefix,
        "environment": environment,
        "name": record.name,
        "owner": record.owner,
        "state": record.state(now).as_str(),
        "scopes": record.scopes.iter().map(keygate::Scope::as_str).collect::<Vec<_>>(),
        "metadata": record.metadata,
        "allowed_ips": record.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        // null: no limit of its own, the services' default applies.
        "rate_limit": record.rate_limit.map(|limit| limit.to_string()),
        // null: no quota of its own. `quota_lineage`: the key its quota is counted under (the
        // first key of its rotation chain).
        "quota": record.quota.map(|quota| quota.to_string()),
        "quota_lineage": record.lineage.as_str(),
        // Credits added by top-ups (`keygate quota ID --add-credits N`), in all.
        "quota_granted": record.quota_granted,
        // Named limits, name -> policy text (`{}`: none of its own).
        "limits": crate::limits::json(&record.limits),
        "pepper_version": record.pepper_version,
        "rotated_from": record.rotated_from.map(|id| id.to_string()),
        "canary": record.canary,
        "created_at": time_json(Some(record.created_at)),
        "updated_at": time_json(Some(record.updated_at)),
        "expires_at": time_json(record.expires_at),
        "disabled_at": time_json(record.disabled_at),
        "revoked_at": time_json(record.revoked_at),
        "last_used_at": time_json(record.last_used_at),
    })
}

/// `keygate peppers`'s table.
pub(crate) fn pepper_table(rows: impl Iterator<Item = [String; 4]>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["VERSION", "KEYS", "FINGERPRINT", "CONFIGURED"]);
    for row in rows {
        table.add_row(row);
    }
    table.trim_fmt()
}
