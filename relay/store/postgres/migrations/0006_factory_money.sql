-- relay schema, version 6 (PostgreSQL translation of sqlite/migrations/0006_factory_money.sql): money (exact
-- decimal TEXT, never a float) and the payment deadline per factory order.

ALTER TABLE factory_orders ADD COLUMN amount TEXT;

ALTER TABLE factory_orders ADD COLUMN currency TEXT;

ALTER TABLE factory_orders ADD COLUMN pay_deadline_iso TEXT;

ALTER TABLE factory_orders ADD COLUMN attention TEXT;
