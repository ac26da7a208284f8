-- relay schema, version 1. Times are epoch seconds (REAL) unless named *_iso.

CREATE TABLE storefront_cursors (
    storefront   TEXT PRIMARY KEY,
    cursor_iso   TEXT NOT NULL,        -- newest storefront updated_at whose page is committed
    updated_at   REAL NOT NULL
);

CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    storefront        TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    number            TEXT NOT NULL,
    state             TEXT NOT NULL,
    attention_reason  TEXT,            -- set while the order needs a person (held, failed)
    attention_detail  TEXT,
    source_updated_iso TEXT NOT NULL,  -- the storefront's updated_at for the stored payload
    payload           TEXT NOT NULL,   -- the normalised Order as JSON
    lease_owner       TEXT,
    lease_expires_at  REAL,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    UNIQUE (storefront, external_id)
);
CREATE INDEX orders_by_state ON orders (state, id);

CREATE TABLE factory_orders (
    id                INTEGER PRIMARY KEY,
    order_id          INTEGER NOT NULL REFERENCES orders (id),
    factory           TEXT NOT NULL,
    key               TEXT NOT NULL UNIQUE,   -- idempotency key, stable forever
    state             TEXT NOT NULL,
    payload           TEXT NOT NULL,          -- the FactoryOrder as JSON, sent unchanged on every attempt
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,                   -- non-NULL exactly while a delivery is owed (outbox)
    lease_owner       TEXT,
    lease_expires_at  REAL,
    last_error        TEXT,
    dead_reason       TEXT,                   -- attention reason when dead-lettered
    reference         TEXT,                   -- the factory's own id for the order
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    UNIQUE (order_id, factory)
);
CREATE INDEX factory_orders_due ON factory_orders (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX factory_orders_by_order ON factory_orders (order_id);

CREATE TABLE order_lines (
    order_id          INTEGER NOT NULL REFERENCES orders (id),
    line_id           TEXT NOT NULL,
    sku               TEXT,
    quantity          INTEGER NOT NULL,
    shipped_quantity  INTEGER NOT NULL DEFAULT 0,
    factory_order_id  INTEGER REFERENCES factory_orders (id),
    PRIMARY KEY (order_id, line_id)
) WITHOUT ROWID;
CREATE INDEX order_lines_by_factory_order ON order_lines (factory_order_id);

CREATE TABLE shipments (
    id                INTEGER PRIMARY KEY,
    factory_order_id  INTEGER NOT NULL REFERENCES factory_orders (id),
    order_id          INTEGER NOT NULL REFERENCES orders (id),
    shipment_id       TEXT NOT NULL,          -- the factory's parcel id
    carrier           TEXT NOT NULL,
    tracking_number   TEXT NOT NULL,
    tracking_url      TEXT,
    lines             TEXT NOT NULL,          -- JSON [{line_id, quantity}]
    received_at       REAL NOT NULL,
    UNIQUE (factory_order_id, shipment_id)
);
CREATE INDEX shipments_by_order ON shipments (order_id);

CREATE TABLE storefront_pushes (
    id                INTEGER PRIMARY KEY,
    shipment_id       INTEGER NOT NULL UNIQUE REFERENCES shipments (id),
    order_id          INTEGER NOT NULL REFERENCES orders (id),
    storefront        TEXT NOT NULL,
    key               TEXT NOT NULL UNIQUE,
    state             TEXT NOT NULL,
    payload           TEXT NOT NULL,          -- the ShipmentPush as JSON
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,
    lease_owner       TEXT,
    lease_expires_at  REAL,
    last_error        TEXT,
    dead_reason       TEXT,
    reference         TEXT,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE INDEX storefront_pushes_due ON storefront_pushes (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX storefront_pushes_by_order ON storefront_pushes (order_id);

CREATE TABLE inbound_messages (
    factory      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    received_at  REAL NOT NULL,
    PRIMARY KEY (factory, message_id)
) WITHOUT ROWID;

CREATE TABLE order_events (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    detail      TEXT                       -- JSON
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);

CREATE TABLE quarantine (
    id           INTEGER PRIMARY KEY,
    storefront   TEXT NOT NULL,
    external_id  TEXT NOT NULL,            -- '' when the record had no readable id
    reason       TEXT NOT NULL,
    raw          TEXT,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    seen_count   INTEGER NOT NULL DEFAULT 1,
    UNIQUE (storefront, external_id, reason)
);
