-- Trace export: a delivery keeps the trace context (a W3C traceparent) of the API request
-- that made it, so that each of its attempts, on any node and after any restart, joins
-- that request's trace. NULL when traces are not exported.
ALTER TABLE deliveries ADD COLUMN traceparent TEXT;
