-- A regenerated key may leave the one it replaced signing `webhook-signature` beside it
-- for a grace period, so that receivers can switch without refusing deliveries.
ALTER TABLE organizations ADD COLUMN retiring_signature_key TEXT;
ALTER TABLE organizations ADD COLUMN retiring_key_until INTEGER;
