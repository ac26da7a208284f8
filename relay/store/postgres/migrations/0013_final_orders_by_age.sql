-- relay schema, version 13 (PostgreSQL translation of sqlite/migrations/0013_final_orders_by_age.sql): final
-- orders by age, so the retention pass walks only the orders old enough to prune.

CREATE INDEX orders_by_state_and_age ON orders (state, updated_at, id);
