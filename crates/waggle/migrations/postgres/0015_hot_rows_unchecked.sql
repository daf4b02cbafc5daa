-- The rows written per event and per attempt no longer have their references checked by
-- foreign keys. Each check was a query of its own, planned and run after every row (an
-- event's organization, each delivery's organization, each attempt's delivery): a sixth
-- of PostgreSQL's CPU in a fan-out (BENCHMARKS.md), for rows that refer to what exists by
-- construction. An event and its deliveries are written by their organization's API key;
-- organizations are never deleted; an attempt is written with its delivery locked by the
-- same statement, and only for a delivery that statement found. The embedded store does
-- not check them either (its group commit writes with foreign keys off). What the
-- cascades did, the deletes now do themselves: retention removes a delivery's attempts
-- with it.
ALTER TABLE events DROP CONSTRAINT events_org_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_org_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
