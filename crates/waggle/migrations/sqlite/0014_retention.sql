-- `--retention` removes events once none of their deliveries is left: each event's
-- deliveries are looked up by it, and deleting an event cascades to them by it too.
CREATE INDEX deliveries_by_event ON deliveries (event_id);
