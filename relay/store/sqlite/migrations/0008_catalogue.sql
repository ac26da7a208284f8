-- relay schema, version 8: the SKU catalogue (issue 13), the routing guards' release, the tracking watchdog.
--
-- sku_catalogue: storefront SKU (or variant id) -> factory, the factory's own SKU (1688: offerId:specId), unit
--   cost (exact decimal TEXT) and currency, priority (lower is tried first; the next one is the fallback) and
--   active. storefront '' applies to every storefront; rows for one storefront replace those for a SKU
--   there. source: 'config' (seeded from `routing.skus`, kept in step with the config) or 'import' (`relay
--   skus import`: owned by the catalogue, never touched by the seed).
-- catalogue_version: one row, bumped by every change to the catalogue; the router reloads its copy of the
--   catalogue only when the number moved (one tiny read per routing pass).
-- factory_orders_by_created: counts the orders routed in the last hour (a storefront's max_orders_per_hour).
-- orders.guards_waived_hash: the order version (`content_hash`) an operator released: the routing guards
--   (margin, approval, caps) let that version through once; an edited order is guarded again.
-- factory_orders.placed_at: when the factory accepted it (the tracking watchdog counts from there; NULL for
--   rows placed before this version: their updated_at is used). factory_orders_awaiting_parcels: the placed
--   and partially shipped factory orders the watchdog looks at, without scanning the rest.

CREATE TABLE sku_catalogue (
    id           INTEGER PRIMARY KEY,
    storefront   TEXT NOT NULL DEFAULT '',
    sku          TEXT NOT NULL,
    factory      TEXT NOT NULL,
    factory_sku  TEXT,
    unit_cost    TEXT,
    currency     TEXT,
    priority     INTEGER NOT NULL DEFAULT 0,
    active       INTEGER NOT NULL DEFAULT 1,
    source       TEXT NOT NULL,
    updated_at   REAL NOT NULL,
    UNIQUE (storefront, sku, factory)
);

CREATE TABLE catalogue_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);

INSERT INTO catalogue_version (id, version) VALUES (1, 0);

CREATE INDEX factory_orders_by_created ON factory_orders (created_at);

ALTER TABLE orders ADD COLUMN guards_waived_hash TEXT;

ALTER TABLE factory_orders ADD COLUMN placed_at REAL;

CREATE INDEX factory_orders_awaiting_parcels ON factory_orders (factory) WHERE state IN ('placed', 'partially_shipped');
