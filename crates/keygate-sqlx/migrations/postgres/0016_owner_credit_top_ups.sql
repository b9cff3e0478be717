-- keygate schema 16: credit top-ups for owners. `keygate_owners.quota_granted` is the running
-- total of the credits operators have added to an owner's shared credit balance
-- (keygate::owner::OwnerUpdate::add_credits). As a key's total (schema 15) it only grows, so a
-- verifier that reads it twice adds it once; the counter under the owner's subject keeps the
-- part already added (`keygate_quota_counters.granted`).
ALTER TABLE keygate_owners ADD COLUMN quota_granted bigint NOT NULL DEFAULT 0;
