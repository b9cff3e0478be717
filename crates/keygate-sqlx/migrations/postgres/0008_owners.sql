-- keygate schema 8: owners as records (issue 17). A key's `owner` column holds its owner's id;
-- an owner has a name, metadata and an optional rate limit shared by all its keys.
-- No foreign key, as in SQLite: the store creates the owner with its first key, in the key's
-- transaction, and refuses to delete an owner that has keys. Changing an owner does not touch
-- its keys' rows: the store notifies the owner's keys itself, in the same transaction, when
-- their cached entries must go.

CREATE TABLE keygate_owners (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    name       text        NOT NULL,
    metadata   jsonb       NOT NULL DEFAULT '{}',
    rate_limit text,                                         -- e.g. '10/1m'; NULL: no owner limit
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Owners named by existing keys become bare records: named after their id, created with
-- their first key.
INSERT INTO keygate_owners (id, name, metadata, rate_limit, created_at, updated_at)
SELECT owner, owner, '{}', NULL, min(created_at), min(created_at)
FROM keygate_keys WHERE owner IS NOT NULL GROUP BY owner;
