-- `--retention` removes old events. A foreign key from deliveries to their event would
-- look the event's deliveries up at each delete, which needs an index on deliveries by
-- event; and every outcome writes a new entry in each of the deliveries' indexes (the
-- update cannot be HOT: `status` is in the due index's predicate). That index cost about
-- a fifth of PostgreSQL's CPU per fan-out delivery. The reference stays, without the
-- key: the logs read nothing of an event here (deliveries keep its fields), a resend
-- keeps its own body, and retention removes an event only once no pending delivery
-- remakes its body from it and the finished ones made with it are gone.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
