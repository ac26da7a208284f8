-- relay schema, version 2: factory state (disabled by a 410, shipment-poll cursor) and the
-- cancellation outbox (one signed `order.cancelled` message per cancelled factory order).

CREATE TABLE factories (
    name             TEXT PRIMARY KEY,
    disabled_at      REAL,               -- non-NULL while deliveries to this factory are paused
    disabled_reason  TEXT,
    shipment_cursor  TEXT,               -- opaque cursor of a polled factory's shipment listing
    updated_at       REAL NOT NULL
);

CREATE TABLE factory_cancellations (
    id                INTEGER PRIMARY KEY,
    factory_order_id  INTEGER NOT NULL UNIQUE REFERENCES factory_orders (id),
    order_id          INTEGER NOT NULL REFERENCES orders (id),
    factory           TEXT NOT NULL,
    key               TEXT NOT NULL UNIQUE,   -- "<factory order key>.cancel": message id and Idempotency-Key
    state             TEXT NOT NULL,          -- pending | done | refused (already shipped) | dead
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,                   -- non-NULL exactly while the message is owed
    lease_owner       TEXT,
    lease_expires_at  REAL,
    last_error        TEXT,
    requested_at      REAL NOT NULL,          -- when the storefront cancellation was seen (the event time)
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE INDEX factory_cancellations_due ON factory_cancellations (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX factory_cancellations_by_order ON factory_cancellations (order_id);
