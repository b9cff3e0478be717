-- keygate schema 5: folded denials. The verifier's audit pipeline folds the denials that name
-- no existing key (unknown id, malformed, bad checksum, missing credential, locked-out client,
-- store unavailable) into one event per client address, reason and interval (action
-- 'denials'), so a flood of forged ids adds a handful of rows, not one per id. NULL in every
-- column below: an ordinary event, standing for itself.

ALTER TABLE keygate_audit_events ADD COLUMN folded_count INTEGER;          -- denials folded in
ALTER TABLE keygate_audit_events ADD COLUMN folded_last_at INTEGER;        -- the last one's time (µs)
ALTER TABLE keygate_audit_events ADD COLUMN folded_sample TEXT;            -- ≤ 5 key ids, space-separated
ALTER TABLE keygate_audit_events ADD COLUMN folded_other_clients INTEGER;  -- 1: clients past the cap
