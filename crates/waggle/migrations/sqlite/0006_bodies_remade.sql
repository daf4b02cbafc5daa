-- A delivery's body is its own `webhook` object (its webhook's id, its URL and its event's
-- type, all columns of the delivery) followed by what every webhook of the event receives
-- alike. That shared part is now kept once, with the event, and a delivery made with its
-- event keeps no body: it is remade, byte for byte, whenever it is read. A delivery whose
-- body cannot be remade so keeps its own: a resend (its URL may have changed since) and
-- every delivery made before this migration. A fan-out to ten webhooks wrote each body's
-- shared part ten times, and every outcome rewrote a row twice as wide as it is now.
ALTER TABLE events ADD COLUMN shared_body BLOB;
-- SQLite cannot drop NOT NULL in place, and rebuilding the table would cascade to the
-- attempts: the column is dropped and added again, nullable, keeping its values.
CREATE TEMP TABLE kept_bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
INSERT INTO kept_bodies SELECT id, body FROM deliveries;
ALTER TABLE deliveries DROP COLUMN body;
ALTER TABLE deliveries ADD COLUMN body BLOB;
UPDATE deliveries SET body = (SELECT k.body FROM kept_bodies k WHERE k.id = deliveries.id);
DROP TABLE kept_bodies;
