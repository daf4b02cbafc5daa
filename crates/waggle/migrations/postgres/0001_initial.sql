-- waggle's schema on PostgreSQL, shared by every node of a deployment. Ids are UUIDv7
-- (ordering by id orders by creation); times are timestamptz (microseconds, UTC).

CREATE TABLE organizations (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    signature_key TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix       TEXT NOT NULL,
    -- SHA-256 of the whole key, hex: keys are 256-bit random, so a fast hash suffices.
    hash         TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE dashboard_users (
    id            UUID PRIMARY KEY,
    org_id        UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
-- Emails are unique and looked up without regard to case.
CREATE UNIQUE INDEX dashboard_users_by_email ON dashboard_users (lower(email));

CREATE TABLE dashboard_sessions (
    -- The cookie holds a random token; only its SHA-256 is stored.
    token_hash TEXT PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES dashboard_users (id) ON DELETE CASCADE,
    org_id     UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Every form of the session carries this token (CSRF protection).
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);

CREATE TABLE connectors (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    environment      TEXT NOT NULL CHECK (environment IN ('production', 'development')),
    display_name     TEXT NOT NULL,
    integration_slug TEXT NOT NULL,
    categories       TEXT NOT NULL, -- JSON array of strings, kept as written
    origin_id        TEXT NOT NULL,
    connector_status TEXT NOT NULL CHECK (connector_status IN ('COMPLETE', 'INCOMPLETE', 'RELINK_NEEDED')),
    end_user_name    TEXT NOT NULL,
    end_user_email   TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX connectors_by_org ON connectors (org_id, id);

CREATE TABLE sync_jobs (
    id                   UUID PRIMARY KEY,
    connector_id         UUID NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    initial_sync         BOOLEAN NOT NULL,
    sync_type            TEXT NOT NULL CHECK (sync_type IN ('MANUAL', 'AUTOMATED')),
    display_status       TEXT NOT NULL CHECK (display_status IN ('Syncing', 'Done', 'Failed')),
    last_sync_start_time TIMESTAMPTZ NOT NULL,
    finished_at          TIMESTAMPTZ,
    error_message        TEXT,
    error_detail         TEXT -- JSON, kept as written
);
CREATE INDEX sync_jobs_by_connector ON sync_jobs (connector_id, id);

CREATE TABLE webhooks (
    id                UUID PRIMARY KEY,
    org_id            UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    url               TEXT NOT NULL,
    type              TEXT NOT NULL CHECK (type IN ('production', 'development')),
    events            TEXT NOT NULL, -- JSON array of event types
    is_enabled        BOOLEAN NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    last_triggered_at TIMESTAMPTZ
);
CREATE INDEX webhooks_by_org ON webhooks (org_id, id);

CREATE TABLE events (
    id           UUID PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_type   TEXT NOT NULL,
    environment  TEXT NOT NULL,
    connector_id UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

-- One event sent to one webhook. The log fields are copied from the event, the connector
-- and the webhook when the delivery is made, so logs survive later edits and deletes.
CREATE TABLE deliveries (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id       UUID NOT NULL,
    webhook_name     TEXT NOT NULL,
    connector_id     UUID NOT NULL,
    event_type       TEXT NOT NULL,
    integration_name TEXT NOT NULL,
    end_user_name    TEXT NOT NULL,
    origin_id        TEXT NOT NULL,
    url              TEXT NOT NULL,
    body             BYTEA NOT NULL,
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
    created_at       TIMESTAMPTZ NOT NULL,
    first_attempt_at TIMESTAMPTZ, -- start of the first recorded attempt: the retry window's origin
    next_attempt_at  TIMESTAMPTZ,
    -- A claim: until then one node owns the next attempt (and renews the claim while it
    -- holds the job). NULL = unclaimed; a claim that ran out may be taken by any node.
    lease_until      TIMESTAMPTZ,
    -- The node (one id per running store) holding the claim: only it renews the lease.
    claimed_by       UUID,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_org ON deliveries (org_id, id);
CREATE INDEX deliveries_by_webhook ON deliveries (org_id, webhook_id, id);

CREATE TABLE attempts (
    delivery_id      UUID NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    duration_us      BIGINT NOT NULL,
    request_url      TEXT NOT NULL,
    request_headers  TEXT NOT NULL, -- JSON array of [name, value]
    response_status  INTEGER,
    response_headers TEXT,          -- JSON array of [name, value]
    response_body    BYTEA,
    error_category   TEXT,
    error_message    TEXT,
    PRIMARY KEY (delivery_id, number)
);
