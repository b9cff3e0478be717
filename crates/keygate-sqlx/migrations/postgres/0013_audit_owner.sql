-- keygate schema 13: owner events. Creating, changing and deleting an owner are audit events
-- (actions 'owner_created', 'owner_changed', 'owner_deleted') that name no key: the owner's id
-- is kept here, so an owner's roll-up (`keygate audit --owner`) finds them, even once the owner
-- is deleted. NULL for every other event (a key's owner is found through keygate_keys).
ALTER TABLE keygate_audit_events ADD COLUMN owner text;

CREATE INDEX keygate_audit_events_owner ON keygate_audit_events (owner) WHERE owner IS NOT NULL;
