-- keygate schema 1: keys and tombstones of deleted ids. Later schema changes are additive.
-- The key's secret is never stored, not even in part: only its HMAC digest.
-- Ids use the "C" collation so keyset paging orders them bytewise, as every keygate store does.

CREATE TABLE keygate_keys (
    id             text COLLATE "C" NOT NULL PRIMARY KEY,   -- public base62 id
    prefix         text        NOT NULL,
    name           text        NOT NULL,
    name_folded    text        NOT NULL,                    -- lowercase name, for case-insensitive search
    owner          text,
    digest         bytea       NOT NULL CHECK (octet_length(digest) = 32),
    pepper_version bigint      NOT NULL CHECK (pepper_version BETWEEN 0 AND 4294967295),
    scopes         text[]      NOT NULL DEFAULT '{}',
    metadata       jsonb       NOT NULL DEFAULT '{}',
    allowed_ips    text[]      NOT NULL DEFAULT '{}',       -- CIDR strings
    rotated_from   text COLLATE "C",
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    expires_at     timestamptz,
    disabled_at    timestamptz,
    revoked_at     timestamptz,
    last_used_at   timestamptz
);

CREATE INDEX keygate_keys_owner ON keygate_keys (owner, id);
CREATE INDEX keygate_keys_expires ON keygate_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX keygate_keys_revoked ON keygate_keys (id) WHERE revoked_at IS NOT NULL;
CREATE INDEX keygate_keys_disabled ON keygate_keys (id) WHERE disabled_at IS NOT NULL AND revoked_at IS NULL;
CREATE INDEX keygate_keys_rotated_from ON keygate_keys (rotated_from) WHERE rotated_from IS NOT NULL;

-- Ids of deleted keys: never reused.
CREATE TABLE keygate_deleted_keys (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    deleted_at timestamptz NOT NULL
);
