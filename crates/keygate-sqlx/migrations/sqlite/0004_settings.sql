-- keygate schema 4: deployment settings, by name, written on first use and never overwritten.
-- Never a secret: pepper fingerprints (a short HMAC of a fixed label, never the pepper), whether
-- this is a development store; later settings (such as the key prefix) join them here.
-- Times are INTEGER microseconds since the Unix epoch (UTC), as in schema 1.

CREATE TABLE keygate_settings (
    name       TEXT    NOT NULL PRIMARY KEY,      -- e.g. pepper.1.fingerprint, development
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- keygate peppers: keys per pepper version.
CREATE INDEX keygate_keys_pepper_version ON keygate_keys (pepper_version);
