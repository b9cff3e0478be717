-- keygate schema 9: quotas (issue 17). A key and an owner may each have a quota: a count per
-- UTC calendar period ('10000/day') or credits with an optional refill
-- ('credits 500 refill 500 every 1d'), in the text form `Quota` parses; NULL: none.
-- A key's quota is counted under its lineage: the id of the first key of its rotation chain,
-- set to the key's own id when it is created and copied by every rotation, so a rotated key
-- keeps spending its predecessor's balance. (The counters themselves are not in this table.)

ALTER TABLE keygate_keys ADD COLUMN quota text;
ALTER TABLE keygate_keys ADD COLUMN lineage text COLLATE "C";
ALTER TABLE keygate_owners ADD COLUMN quota text;

-- Existing keys: follow each rotation chain back to its first key. A key whose predecessor
-- was deleted starts its own lineage.
WITH RECURSIVE chain (id, root) AS (
    SELECT id, id FROM keygate_keys
    WHERE rotated_from IS NULL
       OR rotated_from NOT IN (SELECT id FROM keygate_keys)
    UNION ALL
    SELECT k.id, chain.root FROM keygate_keys AS k JOIN chain ON k.rotated_from = chain.id
)
UPDATE keygate_keys SET lineage = chain.root FROM chain WHERE chain.id = keygate_keys.id;
UPDATE keygate_keys SET lineage = id WHERE lineage IS NULL;
ALTER TABLE keygate_keys ALTER COLUMN lineage SET NOT NULL;
