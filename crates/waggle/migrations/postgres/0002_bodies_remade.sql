-- A delivery's body is its own `webhook` object (its webhook's id, its URL and its event's
-- type, all columns of the delivery) followed by what every webhook of the event receives
-- alike. That shared part is now kept once, with the event, and a delivery made with its
-- event keeps no body: it is remade, byte for byte, whenever it is read. A delivery whose
-- body cannot be remade so keeps its own: a resend (its URL may have changed since) and
-- every delivery made before this migration.
ALTER TABLE events ADD COLUMN shared_body BYTEA;
ALTER TABLE deliveries ALTER COLUMN body DROP NOT NULL;
