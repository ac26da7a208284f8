-- relay schema, version 10 (PostgreSQL translation of sqlite/migrations/0010_claimed_by_the_claim.sql):
-- factory_orders.claimed is set by the claim itself (`claim_deliveries` sets claimed = 1 with the lease), so
-- the trigger of version 4 goes.

DROP TRIGGER factory_orders_claimed ON factory_orders;

DROP FUNCTION factory_orders_claimed();
