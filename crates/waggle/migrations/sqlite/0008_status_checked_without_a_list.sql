-- A CHECK of `status IN (four values)` is run by building a temporary b-tree of the four
-- values and looking the status up in it, every time a delivery is inserted or its
-- status changes: twice per delivery, on the thread every hot write waits for, where it
-- was about a sixth of that thread's work. The same rule, as comparisons, costs next to
-- nothing. SQLite cannot change a constraint in place, so the table is made anew
-- (the store runs its migrations with foreign keys off, so that dropping the old table
-- does not cascade to the attempts, and counts broken references before and after).
CREATE TABLE deliveries_checked (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id       TEXT NOT NULL,
    webhook_name     TEXT NOT NULL,
    url              TEXT NOT NULL,
    -- pending: to be attempted at next_attempt_at; delivered: an HTTP response came back;
    -- failed: network failures used up the retries or the window; cancelled: webhook deleted.
    status           TEXT NOT NULL CHECK (status = 'pending' OR status = 'delivered'
                                          OR status = 'failed' OR status = 'cancelled'),
    -- Attempts with a recorded outcome (the log's "attempts").
    attempt_count    INTEGER NOT NULL DEFAULT 0,
    -- Attempts claimed, including any a crash interrupted: the retry budget counts these,
    -- so no delivery gets more than its budget of attempts, whichever node runs them.
    attempts_started INTEGER NOT NULL DEFAULT 0,
    response_code    INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    first_attempt_at INTEGER, -- start of the first recorded attempt: the retry window's origin
    next_attempt_at  INTEGER,
    -- A claim: until then one dispatcher owns the next attempt. NULL = unclaimed.
    lease_until      INTEGER,
    finished_at      INTEGER,
    -- Only of a delivery whose body cannot be remade from its event (see 0006).
    body             BLOB
);
INSERT INTO deliveries_checked (rowid, id, org_id, event_id, webhook_id, webhook_name, url,
    status, attempt_count, attempts_started, response_code, last_error, created_at,
    first_attempt_at, next_attempt_at, lease_until, finished_at, body)
SELECT rowid, id, org_id, event_id, webhook_id, webhook_name, url, status, attempt_count,
    attempts_started, response_code, last_error, created_at, first_attempt_at,
    next_attempt_at, lease_until, finished_at, body
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_checked RENAME TO deliveries;
CREATE INDEX deliveries_by_org ON deliveries (org_id, id);
CREATE INDEX deliveries_by_webhook ON deliveries (org_id, webhook_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, webhook_id)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_claimed ON deliveries (lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
