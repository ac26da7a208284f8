-- relay schema, version 7: what operators read and do (issue 12: `relay status`, `relay orders`, hold/release).
--
-- storefronts: one row per polled storefront, written once per poll pass (`Store.record_poll`): when the last
--   poll succeeded, when one last failed and why (scrubbed). A storefront is failing while
--   last_poll_error_at is later than last_poll_ok_at.
-- factories.failing_since, next_probe_at, last_error: the forwarder's circuit for the factory, written on its
--   transitions only (`Store.record_factory_health`): opened, a probe failed, recovered (all NULL).
-- Indexes: the filtered listing (`Store.list_orders`: by storefront, by factory, by attention reason), order
--   numbers (`Store.resolve_order`: '#1042'), dead letters per outbox (partial: only dead rows), and the
--   placed / pushed per minute chart (events by kind and time, bounded by the chart's window).

CREATE TABLE storefronts (
    name                TEXT PRIMARY KEY,
    last_poll_ok_at     REAL,
    last_poll_error_at  REAL,
    last_error          TEXT,
    updated_at          REAL NOT NULL
);

ALTER TABLE factories ADD COLUMN failing_since REAL;

ALTER TABLE factories ADD COLUMN next_probe_at REAL;

ALTER TABLE factories ADD COLUMN last_error TEXT;

CREATE INDEX orders_by_storefront ON orders (storefront, id);

CREATE INDEX orders_by_attention ON orders (attention_reason, id) WHERE attention_reason IS NOT NULL;

CREATE INDEX orders_by_number ON orders (number);

CREATE INDEX factory_orders_by_factory ON factory_orders (factory, order_id);

CREATE INDEX factory_orders_dead ON factory_orders (updated_at) WHERE state = 'dead';

CREATE INDEX storefront_pushes_dead ON storefront_pushes (updated_at) WHERE state = 'dead';

CREATE INDEX factory_cancellations_dead ON factory_cancellations (updated_at) WHERE state = 'dead';

CREATE INDEX order_events_by_kind ON order_events (kind, at);
