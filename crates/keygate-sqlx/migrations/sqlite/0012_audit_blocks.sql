-- keygate schema 12: request events kept many to a row (SQLite only).
--
-- A busy service's trail is almost all request events, and a row costs SQLite three B-tree
-- inserts (the table and its two indexes): more CPU than the request it records. The sink now
-- writes each batch's request events as blocks, one row per up to 16,384 events, their values
-- encoded in one blob; lifecycle events, folded denials and anything with an actor or a detail
-- stay rows of keygate_audit_events. Every event, row or block, takes its id from
-- keygate_audit_events' sequence, in the order it was recorded; reads merge both by id.
CREATE TABLE keygate_audit_blocks (
    first_id INTEGER PRIMARY KEY,                 -- the id of its first event
    last_id  INTEGER NOT NULL,                    -- of its last (ids in between may be rows')
    first_at INTEGER NOT NULL,                    -- its earliest event's time (µs)
    last_at  INTEGER NOT NULL,                    -- its latest event's time (µs)
    count    INTEGER NOT NULL,                    -- events
    denied   INTEGER NOT NULL,                    -- of which denied
    keys     BLOB    NOT NULL,                    -- a Bloom filter of their key ids
    events   BLOB    NOT NULL                     -- the events (format 1: keygate-sqlx's audit/block.rs)
) STRICT;

CREATE INDEX keygate_audit_blocks_last_at ON keygate_audit_blocks (last_at);
