-- relay schema, version 12: owed deliveries per factory, in due order (issue 15, review of the claim).
--
-- factory_orders_due_by_factory: the delivery claim (`claim_deliveries`) runs for one destination factory at
--   a time. Through `factory_orders_due` (all factories' owed rows in due order) it walked every other
--   factory's due rows before finding this one's: a disabled factory, or one whose circuit is open, holding
--   100k owed rows made every claim for a healthy factory walk them. This index holds the same rows (same
--   WHERE) keyed by factory first. `factory_orders_due` stays: the wake-up times (`next_due`,
--   `next_delivery_due`) and the oldest-owed age read the earliest row over all factories.

CREATE INDEX factory_orders_due_by_factory ON factory_orders (factory, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
