-- Failed dashboard sign-ins of the last minutes, by email and by client address: past a
-- few, sign-in is refused for a while, even with the right password.
CREATE TABLE login_failures (
    email     TEXT NOT NULL,
    address   TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_by_email ON login_failures (email, failed_at);
CREATE INDEX login_failures_by_address ON login_failures (address, failed_at);
CREATE INDEX login_failures_by_age ON login_failures (failed_at);
