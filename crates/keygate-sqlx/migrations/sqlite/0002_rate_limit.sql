-- A key's own rate limit: NULL (the verifier's default applies), 'unlimited', or a policy
-- written as keygate::rate::RatePolicy displays it, e.g. '100/1s burst 200'.
ALTER TABLE keygate_keys ADD COLUMN rate_limit TEXT;
