-- relay schema, version 12 (PostgreSQL translation of sqlite/migrations/0012_due_by_factory.sql): owed
-- deliveries per factory, in due order, for the per-factory delivery claim (`claim_deliveries`).

CREATE INDEX factory_orders_due_by_factory ON factory_orders (factory, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
