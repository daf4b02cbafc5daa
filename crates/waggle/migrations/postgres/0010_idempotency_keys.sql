-- The first answer to a call made with an `Idempotency-Key`, kept for a day: a repeat of
-- the same call (the same method, path and body) gets it again and changes nothing; the
-- same key with another call is refused. Written in the transaction of the call's own
-- effects, so that no call is ever remembered without them, nor done without being
-- remembered; two nodes given the same key at once are ordered by its row.
CREATE TABLE idempotency_keys (
    org_id      UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    -- SHA-256 of the method, the path and the body, hex.
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
