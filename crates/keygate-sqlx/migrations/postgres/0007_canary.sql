-- Canary keys (issue 18): decoys that are never accepted; a use raises a high-severity audit
-- event. Set when the key is minted, never changed. Existing keys are not canaries.
ALTER TABLE keygate_keys ADD COLUMN canary BOOLEAN NOT NULL DEFAULT false;
