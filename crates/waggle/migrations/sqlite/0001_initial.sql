-- waggle's schema on SQLite. Ids are UUIDv7 text (sorting by id sorts by creation);
-- times are microseconds since the Unix epoch, UTC.

CREATE TABLE organizations (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    signature_key TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix       TEXT NOT NULL,
    -- SHA-256 of the whole key, hex: keys are 256-bit random, so a fast hash suffices.
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE dashboard_users (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE connectors (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    environment      TEXT NOT NULL CHECK (environment IN ('production', 'development')),
    display_name     TEXT NOT NULL,
    integration_slug TEXT NOT NULL,
    categories       TEXT NOT NULL, -- JSON array of strings
    origin_id        TEXT NOT NULL,
    connector_status TEXT NOT NULL CHECK (connector_status IN ('COMPLETE', 'INCOMPLETE', 'RELINK_NEEDED')),
    end_user_name    TEXT NOT NULL,
    end_user_email   TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX connectors_by_org ON connectors (org_id, id);

CREATE TABLE sync_jobs (
    id                   TEXT PRIMARY KEY,
    connector_id         TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    initial_sync         INTEGER NOT NULL,
    sync_type            TEXT NOT NULL CHECK (sync_type IN ('MANUAL', 'AUTOMATED')),
    display_status       TEXT NOT NULL CHECK (display_status IN ('Syncing', 'Done', 'Failed')),
    last_sync_start_time INTEGER NOT NULL,
    finished_at          INTEGER,
    error_message        TEXT,
    error_detail         TEXT -- JSON
);
CREATE INDEX sync_jobs_by_connector ON sync_jobs (connector_id, id);

CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    url               TEXT NOT NULL,
    type              TEXT NOT NULL CHECK (type IN ('production', 'development')),
    events            TEXT NOT NULL, -- JSON array of event types
    is_enabled        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    last_triggered_at INTEGER
);
CREATE INDEX webhooks_by_org ON webhooks (org_id, id);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_type   TEXT NOT NULL,
    environment  TEXT NOT NULL,
    connector_id TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

-- One event sent to one webhook. The log fields are copied from the event, the connector
-- and the webhook when the delivery is made, so logs survive later edits and deletes.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id       TEXT NOT NULL,
    webhook_name     TEXT NOT NULL,
    connector_id     TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    integration_name TEXT NOT NULL,
    end_user_name    TEXT NOT NULL,
    origin_id        TEXT NOT NULL,
    url              TEXT NOT NULL,
    body             BLOB NOT NULL,
    -- pending: to be attempted at next_attempt_at; delivered: an HTTP response came back;
    -- failed: network failures used up the retries or the window; cancelled: webhook deleted.
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
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
    finished_at      INTEGER
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_org ON deliveries (org_id, id);
CREATE INDEX deliveries_by_webhook ON deliveries (org_id, webhook_id, id);

CREATE TABLE attempts (
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
);
