-- A webhook whose attempts have all failed for a while is disabled by itself:
-- failing_since is when its failures began (NULL after a success), kept by each batch of
-- outcomes; disabled_reason and disabled_at say why and when it was disabled that way.
ALTER TABLE webhooks ADD COLUMN failing_since TIMESTAMPTZ;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhooks ADD COLUMN disabled_at TIMESTAMPTZ;

-- Outcome batches move failing_since as they move last_triggered_at: neither changes what
-- an event reads of its webhooks.
DROP TRIGGER webhooks_changed ON webhooks;
CREATE TRIGGER webhooks_changed AFTER UPDATE ON webhooks
    FOR EACH ROW
    WHEN (to_jsonb(OLD) - 'last_triggered_at' - 'failing_since'
          IS DISTINCT FROM to_jsonb(NEW) - 'last_triggered_at' - 'failing_since')
    EXECUTE FUNCTION bump_records_version();
