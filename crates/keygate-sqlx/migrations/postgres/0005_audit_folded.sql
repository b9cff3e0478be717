-- keygate schema 5: folded denials. The verifier's audit pipeline folds the denials that name
-- no existing key (unknown id, malformed, bad checksum, missing credential, locked-out client,
-- store unavailable) into one event per client address, reason and interval (action
-- 'denials'), so a flood of forged ids adds a handful of rows, not one per id. NULL in every
-- column below: an ordinary event, standing for itself.

ALTER TABLE keygate_audit_events
    ADD COLUMN folded_count         bigint,        -- denials folded in
    ADD COLUMN folded_last_at       timestamptz,   -- the last one's time
    ADD COLUMN folded_sample        text,          -- ≤ 5 key ids, space-separated
    ADD COLUMN folded_other_clients boolean;       -- true: clients past the cap
