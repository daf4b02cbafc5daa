-- `--retention` removes events once none of their deliveries is left: each event's
-- deliveries are looked up by it, and the foreign key's cascade from events looks them up
-- by it too (without this index, a scan of every delivery per event deleted).
CREATE INDEX deliveries_by_event ON deliveries (event_id);
