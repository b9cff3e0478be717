-- keygate schema 17: an index on a key's lineage. A top-up records the new total on every key
-- of the lineage (schema 15), and the admin then lists them to announce each one on channels
-- the store does not publish to (KeyFilter::lineage): both look keys up by lineage, which
-- without an index is a scan of every key. `id` second keeps the lineage listing in keyset
-- order.
CREATE INDEX keygate_keys_lineage ON keygate_keys (lineage, id);
