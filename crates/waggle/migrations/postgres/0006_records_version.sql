-- Every node keeps in memory the webhooks and connectors that events read, each tagged
-- with its organization's records_version. Each API call reads the version with its key,
-- so a change committed on any node is seen by the next call on every node. The triggers
-- bump it in the transaction of the change itself, whatever statement makes it.
ALTER TABLE organizations ADD COLUMN records_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION bump_records_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE organizations SET records_version = records_version + 1
     WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.org_id ELSE NEW.org_id END;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_added_or_removed AFTER INSERT OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION bump_records_version();
-- Not when only last_triggered_at moved: every batch of outcomes moves it.
CREATE TRIGGER webhooks_changed AFTER UPDATE ON webhooks
    FOR EACH ROW
    WHEN (to_jsonb(OLD) - 'last_triggered_at' IS DISTINCT FROM to_jsonb(NEW) - 'last_triggered_at')
    EXECUTE FUNCTION bump_records_version();
CREATE TRIGGER connectors_changed AFTER UPDATE OR DELETE ON connectors
    FOR EACH ROW EXECUTE FUNCTION bump_records_version();
