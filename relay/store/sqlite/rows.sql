-- Set-based forms of per-row queries (ADR 12), for the SQLite connector only.
--
-- `-- name: <query>[]` is `<query>` (in queries.sql) for a whole batch in ONE statement:
-- `Transaction.execute_many(query, rows)` runs it with `:rows`, the JSON array of the row mappings, read with
-- json_each (`j.value ->> 'name'` is the row's `:name`). The effect is that of running `<query>` once per row,
-- in order: inserts keep the array's order (ORDER BY j.key), an update that two rows aim at the same target
-- takes the last of them (`MAX(j.key)` picks that row's other columns), an increment adds them all (SUM).
-- Without a form here, execute_many runs `<query>` once per row (sqlite3's executemany).

-- name: insert_event[]
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail)
SELECT j.value ->> 'order_id', j.value ->> 'at', j.value ->> 'kind', j.value ->> 'from_state',
       j.value ->> 'to_state', j.value ->> 'detail'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: insert_event_by_external_id[]
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail)
SELECT (SELECT id FROM orders WHERE storefront = j.value ->> 'storefront' AND external_id = j.value ->> 'external_id'),
       j.value ->> 'at', j.value ->> 'kind', j.value ->> 'from_state', j.value ->> 'to_state', j.value ->> 'detail'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: insert_order[]
INSERT INTO orders (storefront, external_id, number, state, source_updated_iso, payload, content_hash, created_at,
                    updated_at)
SELECT j.value ->> 'storefront', j.value ->> 'external_id', j.value ->> 'number', j.value ->> 'state',
       j.value ->> 'source_updated_iso', j.value ->> 'payload', j.value ->> 'content_hash', j.value ->> 'now',
       j.value ->> 'now'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: insert_order_line[]
INSERT INTO order_lines (order_id, line_id, sku, quantity)
SELECT (SELECT id FROM orders WHERE storefront = j.value ->> 'storefront' AND external_id = j.value ->> 'external_id'),
       j.value ->> 'line_id', j.value ->> 'sku', j.value ->> 'quantity'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: insert_factory_order[]
INSERT INTO factory_orders (order_id, factory, key, state, payload, next_attempt_at, created_at, updated_at)
SELECT j.value ->> 'order_id', j.value ->> 'factory', j.value ->> 'key', 'pending', j.value ->> 'payload',
       j.value ->> 'now', j.value ->> 'now', j.value ->> 'now'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: assign_line[]
UPDATE order_lines SET factory_order_id = (SELECT id FROM factory_orders WHERE key = r.fo_key)
FROM (SELECT j.value ->> 'key' AS fo_key, j.value ->> 'order_id' AS order_id, j.value ->> 'line_id' AS line_id,
             MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 2, 3) AS r
WHERE order_lines.order_id = r.order_id AND order_lines.line_id = r.line_id;

-- name: set_order_state[]
UPDATE orders SET state = r.state,
                  attention_reason = CASE WHEN r.reason IS NULL AND attention_reason IN
                                              ('cancel_rejected', 'changed_after_placement', 'shipped_after_cancel',
                                               'refund_required', 'duplicate_at_factory')
                                          THEN attention_reason ELSE r.reason END,
                  attention_detail = CASE WHEN r.reason IS NULL AND attention_reason IN
                                              ('cancel_rejected', 'changed_after_placement', 'shipped_after_cancel',
                                               'refund_required', 'duplicate_at_factory')
                                          THEN attention_detail ELSE r.detail END,
                  updated_at = r.now, lease_owner = NULL, lease_expires_at = NULL
FROM (SELECT j.value ->> 'order_id' AS order_id, j.value ->> 'state' AS state, j.value ->> 'reason' AS reason,
             j.value ->> 'detail' AS detail, j.value ->> 'now' AS now, MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 1) AS r
WHERE orders.id = r.order_id;

-- name: update_factory_order[]
UPDATE factory_orders
SET state = r.state, attempts = r.attempts, next_attempt_at = r.next_attempt_at, last_error = r.error,
    dead_reason = r.dead_reason, reference = COALESCE(r.reference, factory_orders.reference),
    amount = COALESCE(r.amount, factory_orders.amount), currency = COALESCE(r.currency, factory_orders.currency),
    pay_deadline_iso = COALESCE(r.pay_deadline_iso, factory_orders.pay_deadline_iso),
    attention = CASE WHEN r.state = 'placed' THEN r.attention ELSE factory_orders.attention END,
    placed_at = CASE WHEN r.state = 'placed' THEN COALESCE(placed_at, r.now) ELSE placed_at END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = r.now
FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'state' AS state, j.value ->> 'attempts' AS attempts,
             j.value ->> 'next_attempt_at' AS next_attempt_at, j.value ->> 'error' AS error,
             j.value ->> 'dead_reason' AS dead_reason, j.value ->> 'reference' AS reference,
             j.value ->> 'amount' AS amount, j.value ->> 'currency' AS currency,
             j.value ->> 'pay_deadline_iso' AS pay_deadline_iso, j.value ->> 'attention' AS attention,
             j.value ->> 'now' AS now, MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 1) AS r
WHERE factory_orders.id = r.id;

-- name: update_push[]
UPDATE storefront_pushes
SET state = r.state, attempts = r.attempts, next_attempt_at = r.next_attempt_at, last_error = r.error,
    dead_reason = r.dead_reason, reference = COALESCE(r.reference, storefront_pushes.reference),
    settled_token = CASE WHEN r.settled THEN lease_token ELSE settled_token END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = r.now
FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'state' AS state, j.value ->> 'attempts' AS attempts,
             j.value ->> 'next_attempt_at' AS next_attempt_at, j.value ->> 'error' AS error,
             j.value ->> 'dead_reason' AS dead_reason, j.value ->> 'reference' AS reference,
             j.value ->> 'settled' AS settled, j.value ->> 'now' AS now, MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 1) AS r
WHERE storefront_pushes.id = r.id;

-- name: update_order_payload[]
UPDATE orders SET payload = r.payload, number = r.number, source_updated_iso = r.source_updated_iso,
                  content_hash = r.content_hash, updated_at = r.now
FROM (SELECT j.value ->> 'order_id' AS order_id, j.value ->> 'payload' AS payload, j.value ->> 'number' AS number,
             j.value ->> 'source_updated_iso' AS source_updated_iso, j.value ->> 'content_hash' AS content_hash,
             j.value ->> 'now' AS now, MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 1) AS r
WHERE orders.id = r.order_id;

-- name: add_shipped_quantity[]
UPDATE order_lines SET shipped_quantity = shipped_quantity + r.quantity
FROM (SELECT j.value ->> 'order_id' AS order_id, j.value ->> 'line_id' AS line_id,
             SUM(j.value ->> 'quantity') AS quantity
      FROM json_each(:rows) AS j GROUP BY 1, 2) AS r
WHERE order_lines.order_id = r.order_id AND order_lines.line_id = r.line_id;

-- name: set_factory_order_shipped[]
UPDATE factory_orders SET state = r.state, next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                          updated_at = r.now
FROM (SELECT j.value ->> 'id' AS id, j.value ->> 'state' AS state, j.value ->> 'now' AS now, MAX(j.key) AS last_key
      FROM json_each(:rows) AS j GROUP BY 1) AS r
WHERE factory_orders.id = r.id;

-- name: insert_shipment[]
INSERT INTO shipments (factory_order_id, order_id, shipment_id, carrier, tracking_number, tracking_url, lines,
                       received_at)
SELECT j.value ->> 'factory_order_id', j.value ->> 'order_id', j.value ->> 'shipment_id', j.value ->> 'carrier',
       j.value ->> 'tracking_number', j.value ->> 'tracking_url', j.value ->> 'lines', j.value ->> 'now'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: insert_push_for_parcel[]
INSERT INTO storefront_pushes (shipment_id, order_id, storefront, key, state, payload, next_attempt_at,
                               created_at, updated_at)
SELECT (SELECT s.id FROM shipments s
        WHERE s.factory_order_id = j.value ->> 'factory_order_id' AND s.shipment_id = j.value ->> 'shipment_id'),
       j.value ->> 'order_id', j.value ->> 'storefront', j.value ->> 'key', 'pending', j.value ->> 'payload',
       j.value ->> 'now', j.value ->> 'now', j.value ->> 'now'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: remember_message[]
INSERT OR IGNORE INTO inbound_messages (factory, message_id, received_at)
SELECT j.value ->> 'factory', j.value ->> 'message_id', j.value ->> 'now'
FROM json_each(:rows) AS j ORDER BY j.key;

-- name: release_factory_order_lease[]
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL
WHERE id IN (SELECT j.value ->> 'id' FROM json_each(:rows) AS j);
