-- Canary keys (issue 18): decoys that are never accepted; a use raises a high-severity audit
-- event. Set when the key is minted, never changed. Existing keys are not canaries.
-- The table is STRICT: a 0/1 integer.
ALTER TABLE keygate_keys ADD COLUMN canary INTEGER NOT NULL DEFAULT 0 CHECK (canary IN (0, 1));
