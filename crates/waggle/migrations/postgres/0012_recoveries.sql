-- Recover: a new delivery for each failed delivery of a webhook in a range of time.
-- resent_as is the delivery a resend or a recovery made of this one: each failed delivery
-- is recovered once (a failed resend is a failed delivery of its own).
ALTER TABLE deliveries ADD COLUMN resent_as UUID;

-- One recovery: its range (range_key as the call gave it, for the one-at-a-time rule),
-- how many deliveries it found at the start and how many it has made anew; lease_until
-- is the claim of the node working it (NULL: none yet), so that another takes it on when
-- that node dies.
CREATE TABLE recoveries (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    webhook_id  UUID NOT NULL,
    since       TIMESTAMPTZ NOT NULL,
    until       TIMESTAMPTZ NOT NULL,
    range_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    deliveries  BIGINT NOT NULL,
    recovered   BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    lease_until TIMESTAMPTZ
);
CREATE UNIQUE INDEX recoveries_running ON recoveries (webhook_id, range_key)
    WHERE status = 'running';
