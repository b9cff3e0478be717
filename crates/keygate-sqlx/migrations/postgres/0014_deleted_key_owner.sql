-- keygate schema 14: a deleted key's owner. A key never changes owner, but deleting it removed
-- the only record of whose it was, and its events and usage left its owner's roll-up
-- (`keygate audit --owner`, `keygate usage --owner`) with it. Its tombstone now keeps the
-- owner (NULL: no owner, or deleted before this schema). Keys are deleted before their owner
-- can be, so an offboarded owner's history stays readable by its id.
ALTER TABLE keygate_deleted_keys ADD COLUMN owner text;

CREATE INDEX keygate_deleted_keys_owner ON keygate_deleted_keys (owner, id) WHERE owner IS NOT NULL;
