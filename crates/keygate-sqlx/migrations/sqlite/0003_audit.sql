-- keygate schema 3: the audit trail and per-day usage counts.
-- Never a key's secret or digest: events name keys by their public id only.
-- Times are INTEGER microseconds since the Unix epoch (UTC), as in schema 1.

-- One row per audit event (a request decided, or a change to a key). AUTOINCREMENT: ids are
-- never reused after pruning, so `keygate audit --follow` can resume after the last id seen.
CREATE TABLE keygate_audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    action     TEXT    NOT NULL,                  -- request, created, renamed, …
    key_id     TEXT,                              -- public id; NULL when none was presented
    outcome    TEXT,                              -- requests: allowed / denied
    reason     TEXT,                              -- denied requests: why
    method     TEXT,
    route      TEXT,                              -- the route template, never the raw path
    client_ip  TEXT,
    status     INTEGER,
    latency_us INTEGER,
    request_id TEXT,
    actor      TEXT,                              -- lifecycle events: who made the change
    detail     TEXT
) STRICT;

CREATE INDEX keygate_audit_events_key ON keygate_audit_events (key_id, at);
CREATE INDEX keygate_audit_events_at ON keygate_audit_events (at);

-- Requests per key per UTC day, allowed and denied.
CREATE TABLE keygate_usage (
    key_id  TEXT    NOT NULL,
    day     INTEGER NOT NULL,                     -- days since 1970-01-01 (UTC)
    allowed INTEGER NOT NULL DEFAULT 0,
    denied  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
) STRICT, WITHOUT ROWID;

CREATE INDEX keygate_usage_day ON keygate_usage (day);
