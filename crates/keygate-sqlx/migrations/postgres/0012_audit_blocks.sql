-- keygate schema 12: on SQLite, request events are kept many to a row (keygate_audit_blocks).
-- PostgreSQL keeps every event a row, so nothing changes here; the migration exists so that a
-- schema version means the same release on both backends.
SELECT 1;
