-- keygate schema 11: named limits (issue 17). A key and an owner may each have several named
-- rate limits ('reads: 100/1s, writes: 10/1s'), each applied on the routes that choose it,
-- in the text form `NamedLimits` parses; the empty text: none.

ALTER TABLE keygate_keys ADD COLUMN limits text NOT NULL DEFAULT '';
ALTER TABLE keygate_owners ADD COLUMN limits text NOT NULL DEFAULT '';
