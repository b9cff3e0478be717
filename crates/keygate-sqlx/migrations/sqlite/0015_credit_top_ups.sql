-- keygate schema 15: credit top-ups. `keygate_keys.quota_granted` is the running total of the
-- credits operators have added to a key's credit balance (keygate::KeyChange::AddCredits),
-- kept equal on every key of one lineage (they spend one balance). The total only grows, so a
-- verifier that reads it twice adds it once. `keygate_quota_counters.granted` is the part of
-- that total an in-process meter has already added to the saved `value`: a top-up read by a
-- meter that crashed before saving is added again after the restart, never twice.
ALTER TABLE keygate_keys ADD COLUMN quota_granted INTEGER NOT NULL DEFAULT 0;

ALTER TABLE keygate_quota_counters ADD COLUMN granted INTEGER NOT NULL DEFAULT 0;
