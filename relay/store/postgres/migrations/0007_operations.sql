-- relay schema, version 7 (PostgreSQL translation of sqlite/migrations/0007_operations.sql): what operators
-- read and do.

CREATE TABLE storefronts (
    name                TEXT PRIMARY KEY,
    last_poll_ok_at     DOUBLE PRECISION,
    last_poll_error_at  DOUBLE PRECISION,
    last_error          TEXT,
    updated_at          DOUBLE PRECISION NOT NULL
);

ALTER TABLE factories ADD COLUMN failing_since DOUBLE PRECISION;

ALTER TABLE factories ADD COLUMN next_probe_at DOUBLE PRECISION;

ALTER TABLE factories ADD COLUMN last_error TEXT;

CREATE INDEX orders_by_storefront ON orders (storefront, id);

CREATE INDEX orders_by_attention ON orders (attention_reason, id) WHERE attention_reason IS NOT NULL;

CREATE INDEX orders_by_number ON orders (number);

CREATE INDEX factory_orders_by_factory ON factory_orders (factory, order_id);

CREATE INDEX factory_orders_dead ON factory_orders (updated_at) WHERE state = 'dead';

CREATE INDEX storefront_pushes_dead ON storefront_pushes (updated_at) WHERE state = 'dead';

CREATE INDEX factory_cancellations_dead ON factory_cancellations (updated_at) WHERE state = 'dead';

CREATE INDEX order_events_by_kind ON order_events (kind, at);
