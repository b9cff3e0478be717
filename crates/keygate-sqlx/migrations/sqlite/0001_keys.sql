-- keygate schema 1: keys and tombstones of deleted ids.
-- Times are INTEGER microseconds since the Unix epoch (UTC). Later schema changes are additive.
-- The key's secret is never stored, not even in part: only its HMAC digest.

CREATE TABLE keygate_keys (
    id             TEXT    NOT NULL PRIMARY KEY,      -- public base62 id
    prefix         TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    name_folded    TEXT    NOT NULL,                  -- lowercase name, for case-insensitive search
    owner          TEXT,
    digest         BLOB    NOT NULL CHECK (length(digest) = 32),
    pepper_version INTEGER NOT NULL CHECK (pepper_version BETWEEN 0 AND 4294967295),
    scopes         TEXT    NOT NULL DEFAULT '[]',     -- JSON array of strings
    metadata       TEXT    NOT NULL DEFAULT '{}',     -- JSON object
    allowed_ips    TEXT    NOT NULL DEFAULT '[]',     -- JSON array of CIDR strings
    rotated_from   TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    disabled_at    INTEGER,
    revoked_at     INTEGER,
    last_used_at   INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX keygate_keys_owner ON keygate_keys (owner, id);
CREATE INDEX keygate_keys_expires ON keygate_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX keygate_keys_revoked ON keygate_keys (id) WHERE revoked_at IS NOT NULL;
CREATE INDEX keygate_keys_disabled ON keygate_keys (id) WHERE disabled_at IS NOT NULL AND revoked_at IS NULL;
CREATE INDEX keygate_keys_rotated_from ON keygate_keys (rotated_from) WHERE rotated_from IS NOT NULL;

-- Ids of deleted keys: never reused.
CREATE TABLE keygate_deleted_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    deleted_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
