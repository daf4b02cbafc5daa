-- Most deliveries are claimed from the moment they are made (the API hands them to its
-- dispatcher) until their outcome, so they were entered in both due indexes at their
-- insert and taken out again at their outcome, four index writes for deliveries no
-- claim could take. The due indexes now hold only unclaimed pending deliveries, and one
-- narrow index holds the claimed ones, by when their claim runs out: for claims that
-- ran out (a node that died, on a shared store), and for dropping every claim at start.
DROP INDEX deliveries_due;
DROP INDEX deliveries_due_by_webhook;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, webhook_id)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_claimed ON deliveries (lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;

-- Attempts are only ever looked up by their delivery, so the table is stored in the
-- order of its key: one b-tree written per attempt instead of a table and its key.
CREATE TABLE attempts_by_delivery (
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_us      INTEGER NOT NULL,
    request_url      TEXT NOT NULL,
    request_headers  TEXT NOT NULL, -- JSON array of [name, value]
    response_status  INTEGER,
    response_headers TEXT,          -- JSON array of [name, value]
    response_body    BLOB,
    error_category   TEXT,
    error_message    TEXT,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
INSERT INTO attempts_by_delivery SELECT delivery_id, number, started_at, duration_us,
    request_url, request_headers, response_status, response_headers, response_body,
    error_category, error_message FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_by_delivery RENAME TO attempts;
