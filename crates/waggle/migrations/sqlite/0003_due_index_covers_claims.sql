-- The poller skips the webhooks this node has no room for and the deliveries another
-- claim holds. With only next_attempt_at in the index, each skipped delivery cost a table
-- read, and a dead destination's thousands of due deliveries were read on every poll.
-- Covering every column the claim tests lets it skip them inside the index (the claim
-- selects rowids, which every index carries).
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, webhook_id, lease_until, status)
    WHERE status = 'pending';
