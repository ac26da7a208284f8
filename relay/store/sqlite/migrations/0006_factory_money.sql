-- relay schema, version 6: money and the payment deadline per factory order (issue 14).
--
-- factory_orders.amount, currency: what the factory order costs, as the factory reported it on placement
--   (`Placement.amount`): exact decimal TEXT (e.g. '37.50'), never a float. NULL when the factory did not say
--   (every webhook factory, and every row from before this version).
-- factory_orders.pay_deadline_iso: when the factory closes the order unpaid (ISO 8601, UTC), or NULL.
-- factory_orders.attention: a flag the factory order carries while it is placed (`Placement.attention` or a
--   polled `FactoryOrderNotice`): 'awaiting_payment' until it is paid, 'payment_expired' once the factory
--   closed it unpaid. The order shows it (not sticky: it clears when the factory order is paid or ships).

ALTER TABLE factory_orders ADD COLUMN amount TEXT;

ALTER TABLE factory_orders ADD COLUMN currency TEXT;

ALTER TABLE factory_orders ADD COLUMN pay_deadline_iso TEXT;

ALTER TABLE factory_orders ADD COLUMN attention TEXT;
