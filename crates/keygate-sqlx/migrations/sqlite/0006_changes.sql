-- keygate schema 6: the change feed. Every change to a key writes a row here, in the
-- transaction that changes the key (these triggers), so every process on the file (services,
-- the CLI) can see it: `SqliteStore::invalidation()` watches for new rows and evicts their
-- keys from its verifier's cache. This is SQLite's counterpart of PostgreSQL's pg_notify.
--
-- seq never goes back or is reused (AUTOINCREMENT) and writers commit one at a time, so rows
-- appear in seq order with no holes: a reader that finds one (rows pruned before it read them)
-- knows it missed changes and drops every cached key.
--
-- Only management changes: last-used times and re-hashing under a new pepper are not announced
-- (as with PostgreSQL's notifications). The newest 10000 rows are kept.

CREATE TABLE keygate_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT                                   -- the changed key's id; NULL: every key
) STRICT;

CREATE TRIGGER keygate_keys_created AFTER INSERT ON keygate_keys
BEGIN
    INSERT INTO keygate_changes (key_id) VALUES (new.id);
    DELETE FROM keygate_changes WHERE seq <= last_insert_rowid() - 10000;
END;

CREATE TRIGGER keygate_keys_changed
AFTER UPDATE OF id, prefix, name, owner, scopes, metadata, allowed_ips, rotated_from,
    created_at, updated_at, expires_at, disabled_at, revoked_at, rate_limit ON keygate_keys
BEGIN
    INSERT INTO keygate_changes (key_id) VALUES (new.id);
    DELETE FROM keygate_changes WHERE seq <= last_insert_rowid() - 10000;
END;

CREATE TRIGGER keygate_keys_deleted AFTER DELETE ON keygate_keys
BEGIN
    INSERT INTO keygate_changes (key_id) VALUES (old.id);
    DELETE FROM keygate_changes WHERE seq <= last_insert_rowid() - 10000;
END;
