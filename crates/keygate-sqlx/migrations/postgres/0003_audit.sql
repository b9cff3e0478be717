-- keygate schema 3: the audit trail and per-day usage counts.
-- Never a key's secret or digest: events name keys by their public id only.

-- One row per audit event (a request decided, or a change to a key). Ids only grow, so
-- `keygate audit --follow` can resume after the last id seen.
CREATE TABLE keygate_audit_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    action     text        NOT NULL,                -- request, created, renamed, …
    key_id     text COLLATE "C",                    -- public id; NULL when none was presented
    outcome    text,                                -- requests: allowed / denied
    reason     text,                                -- denied requests: why
    method     text,
    route      text,                                -- the route template, never the raw path
    client_ip  text,
    status     integer,
    latency_us bigint,
    request_id text,
    actor      text,                                -- lifecycle events: who made the change
    detail     text
);

CREATE INDEX keygate_audit_events_key ON keygate_audit_events (key_id, at);
CREATE INDEX keygate_audit_events_at ON keygate_audit_events (at);

-- Requests per key per UTC day, allowed and denied.
CREATE TABLE keygate_usage (
    key_id  text COLLATE "C" NOT NULL,
    day     date   NOT NULL,
    allowed bigint NOT NULL DEFAULT 0,
    denied  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);

CREATE INDEX keygate_usage_day ON keygate_usage (day);
