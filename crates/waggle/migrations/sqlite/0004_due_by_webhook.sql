-- Each webhook's own queue of pending deliveries, in due order: a claim that finds the
-- head of the common queue taken up by deliveries it may not take (a dead destination's
-- backlog, whose lane is full) looks up the other webhooks here, a read per webhook,
-- instead of reading through the whole backlog on every poll. Unlike deliveries_due it
-- leaves out the claim (lease_until), so that claiming a delivery changes one index
-- entry, not two; the claims this lookup skips are read from the table.
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';
