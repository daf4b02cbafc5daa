-- Ordered delivery: a webhook may ask for the events of each connector in the order the
-- API accepted them. Its deliveries carry the connector (ordered_by); of those pending for
-- one webhook and connector, only the first is due, the ones behind it wait with no
-- next_attempt_at (blocked) until it ends, and the next is then made due. Unordered
-- deliveries keep ordered_by NULL and stay out of the index.
ALTER TABLE webhooks ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN ordered_by TEXT;
CREATE INDEX deliveries_in_order ON deliveries (webhook_id, ordered_by, id)
    WHERE status = 'pending' AND ordered_by IS NOT NULL;
