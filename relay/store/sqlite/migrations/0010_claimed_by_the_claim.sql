-- relay schema, version 10: factory_orders.claimed is set by the claim itself (ADR 12).
--
-- The trigger of version 4 ran a trigger program (and a second UPDATE of the row) for every row any statement
-- touched with lease_owner or lease_expires_at in its SET list: two extra statements per factory order per
-- claim, outcome and shipment. The only statement that gives a factory order a lease is `claim_deliveries`
-- (renewing one needs the token of a claim), and it now sets `claimed = 1` with the lease.

DROP TRIGGER factory_orders_claimed;
