-- Each webhook's own queue of pending deliveries, in due order: a claim that finds the
-- head of the common queue taken up by deliveries it may not take (a dead destination's
-- backlog, whose lane is full) looks up the other webhooks here, a read per webhook,
-- instead of reading through the whole backlog on every poll. As deliveries_due, it
-- holds every column the claim tests, so that it skips claimed deliveries inside the index.
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at, lease_until, status)
    WHERE status = 'pending';
