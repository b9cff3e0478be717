-- keygate schema 10: quota counters (issue 17), where an in-process quota meter saves its
-- counters write-behind (keygate::quota::QuotaLedger). One row per subject, overwritten on
-- each save. `subject` is the subject's text (`key:<id>` for a key's lineage, `owner:<tag>`
-- for an owner); `kind` the counter's kind (`minute`, `hour`, `day`, `month`, `credits`);
-- `window_index` the window the value belongs to (keygate::quota::Quota::window_at); `value`
-- the units used in that window (a period) or the credits left (credits).
-- Independent of migration 9 (quota fields on keys and owners): either may be applied first.

CREATE TABLE keygate_quota_counters (
    subject      TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    window_index INTEGER NOT NULL,
    value        INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL                 -- microseconds since the epoch
) STRICT, WITHOUT ROWID;
