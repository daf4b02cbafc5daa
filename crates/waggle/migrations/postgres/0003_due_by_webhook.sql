-- Each webhook's own queue of pending deliveries, in due order. A claim reads the queue
-- in due order only so far (see the store's `claim_due`): past that, a destination whose
-- lane is full (a dead one's backlog) would cost a read per delivery of it on every
-- claim, however large it grows; each webhook with room is looked up here instead.
CREATE INDEX deliveries_due_by_webhook ON deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';
