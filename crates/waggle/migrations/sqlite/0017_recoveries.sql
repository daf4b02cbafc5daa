-- Recover: a new delivery for each failed delivery of a webhook in a range of time.
-- resent_as is the delivery a resend or a recovery made of this one: each failed delivery
-- is recovered once (a failed resend is a failed delivery of its own).
ALTER TABLE deliveries ADD COLUMN resent_as TEXT;

-- One recovery: its range (range_key as the call gave it, for the one-at-a-time rule),
-- how many deliveries it found at the start and how many it has made anew; lease_until
-- is the claim of the node working it (NULL: none yet), so that another takes it on when
-- that node dies.
CREATE TABLE recoveries (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    webhook_id  TEXT NOT NULL,
    since       INTEGER NOT NULL,
    until       INTEGER NOT NULL,
    range_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    deliveries  INTEGER NOT NULL,
    recovered   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    lease_until INTEGER
);
CREATE UNIQUE INDEX recoveries_running ON recoveries (webhook_id, range_key)
    WHERE status = 'running';
