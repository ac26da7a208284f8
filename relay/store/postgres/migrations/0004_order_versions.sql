-- relay schema, version 4 (PostgreSQL translation of sqlite/migrations/0004_order_versions.sql): order
-- versions. factory_orders.claimed is set by a trigger once a delivery of the factory order was ever claimed
-- (SQLite: an AFTER UPDATE trigger updating the row again; here a BEFORE UPDATE trigger setting NEW.claimed,
-- same meaning: every claim, whoever writes it, counts).

ALTER TABLE orders ADD COLUMN content_hash TEXT;

ALTER TABLE order_lines ADD COLUMN cancelled_quantity INTEGER NOT NULL DEFAULT 0;

ALTER TABLE factory_orders ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;

UPDATE factory_orders SET claimed = 1;

CREATE FUNCTION factory_orders_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.claimed := 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER factory_orders_claimed BEFORE UPDATE OF lease_owner, lease_expires_at ON factory_orders
FOR EACH ROW WHEN (NEW.claimed = 0 AND (NEW.lease_owner IS NOT NULL OR NEW.lease_expires_at IS NOT NULL))
EXECUTE FUNCTION factory_orders_claimed();

ALTER TABLE factory_cancellations ADD COLUMN payload TEXT;
