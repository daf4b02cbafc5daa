-- The fields a log shows of its event (the connector, the event's type, the integration,
-- the end user and the origin) were copied onto each of the event's deliveries: ten times
-- for a fan-out to ten webhooks, and rewritten with each delivery's row at every outcome.
-- They are now kept once, with the event (which already had the connector and the type),
-- and a log reads them from there. Events without deliveries keep empty strings: no log
-- shows them.
ALTER TABLE events ADD COLUMN integration_name TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN end_user_name TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN origin_id TEXT NOT NULL DEFAULT '';
UPDATE events SET (integration_name, end_user_name, origin_id) = (
    SELECT d.integration_name, d.end_user_name, d.origin_id FROM deliveries d
    WHERE d.event_id = events.id LIMIT 1)
WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id);
ALTER TABLE deliveries DROP COLUMN connector_id;
ALTER TABLE deliveries DROP COLUMN event_type;
ALTER TABLE deliveries DROP COLUMN integration_name;
ALTER TABLE deliveries DROP COLUMN end_user_name;
ALTER TABLE deliveries DROP COLUMN origin_id;
