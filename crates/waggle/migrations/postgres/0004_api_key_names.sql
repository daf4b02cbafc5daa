-- Organizations manage their own API keys, each with a name to tell them apart.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'First key';
CREATE INDEX api_keys_by_org ON api_keys (org_id, id);
