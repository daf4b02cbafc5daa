-- A webhook's own retry rules: retry_policy is its schedule as the API writes it, in JSON
-- ("standard", "extended" or {"delays": [...]}), and retry_on_status the JSON list of HTTP
-- statuses retried besides network failures.
ALTER TABLE webhooks ADD COLUMN retry_policy TEXT NOT NULL DEFAULT '"standard"';
ALTER TABLE webhooks ADD COLUMN retry_on_status TEXT NOT NULL DEFAULT '[]';
