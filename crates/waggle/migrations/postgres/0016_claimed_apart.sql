-- Most deliveries are claimed from the moment they are made (the API hands them to its
-- node's dispatcher) until their outcome. The due indexes held them all the same: two
-- index entries written per delivery that no claim could take, and every claim read
-- through the deliveries in flight (up to a node's whole job budget, each a row read)
-- before it reached one it could take. The due indexes now hold only the unclaimed
-- pending deliveries, and a narrow one the claimed, by when their claim runs out: for
-- the claims of a node that died. As the embedded store has since its migration 0005.
DROP INDEX deliveries_due;
DROP INDEX deliveries_due_by_webhook;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending' AND lease_until IS NULL;
CREATE INDEX deliveries_claimed ON deliveries (lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
