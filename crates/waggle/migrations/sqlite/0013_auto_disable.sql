-- A webhook whose attempts have all failed for a while is disabled by itself:
-- failing_since is when its failures began (NULL after a success), kept by each group of
-- outcomes; disabled_reason and disabled_at say why and when it was disabled that way.
ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhooks ADD COLUMN disabled_at INTEGER;
