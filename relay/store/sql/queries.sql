-- Named queries for the SQLite store. Each block starts with "-- name: <name>".
-- Id lists are passed as one JSON array parameter and read with json_each.

-- name: get_cursor
SELECT cursor_iso FROM storefront_cursors WHERE storefront = ?;

-- name: set_cursor
INSERT INTO storefront_cursors (storefront, cursor_iso, updated_at) VALUES (?, ?, ?)
ON CONFLICT (storefront) DO UPDATE SET cursor_iso = excluded.cursor_iso, updated_at = excluded.updated_at
WHERE excluded.cursor_iso > storefront_cursors.cursor_iso;

-- name: orders_by_external_ids
SELECT id, external_id, state, source_updated_iso, payload, attention_reason
FROM orders WHERE storefront = ? AND external_id IN (SELECT value FROM json_each(?));

-- name: insert_order
INSERT INTO orders (storefront, external_id, number, state, source_updated_iso, payload, created_at, updated_at)
VALUES (?, ?, ?, 'received', ?, ?, ?, ?);

-- name: insert_order_line
INSERT INTO order_lines (order_id, line_id, sku, quantity)
VALUES ((SELECT id FROM orders WHERE storefront = ? AND external_id = ?), ?, ?, ?);

-- name: insert_event_by_external_id
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail)
VALUES ((SELECT id FROM orders WHERE storefront = ? AND external_id = ?), ?, ?, ?, ?, ?);

-- name: insert_event
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?);

-- name: update_order_payload
UPDATE orders SET payload = ?, number = ?, source_updated_iso = ?, updated_at = ? WHERE id = ?;

-- name: replace_order_lines_delete
DELETE FROM order_lines WHERE order_id = ? AND factory_order_id IS NULL;

-- name: insert_order_line_by_id
INSERT OR IGNORE INTO order_lines (order_id, line_id, sku, quantity) VALUES (?, ?, ?, ?);

-- name: set_order_state
-- A rejected cancellation stays flagged through later state changes until a person acts.
UPDATE orders SET state = ?1,
                  attention_reason = CASE WHEN ?2 IS NULL AND attention_reason = 'cancel_rejected'
                                          THEN attention_reason ELSE ?2 END,
                  attention_detail = CASE WHEN ?2 IS NULL AND attention_reason = 'cancel_rejected'
                                          THEN attention_detail ELSE ?3 END,
                  updated_at = ?4, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?5;

-- name: flag_order
UPDATE orders SET attention_reason = ?, attention_detail = ?, updated_at = ? WHERE id = ?;

-- name: quarantine
INSERT INTO quarantine (storefront, external_id, reason, raw, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (storefront, external_id, reason)
DO UPDATE SET last_seen = excluded.last_seen, raw = excluded.raw, seen_count = seen_count + 1;

-- name: claim_orders_to_route
UPDATE orders SET lease_owner = ?, lease_expires_at = ?
WHERE id IN (
    SELECT id FROM orders
    WHERE state = 'received' AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
    ORDER BY id LIMIT ?
)
RETURNING id, storefront, payload;

-- name: order_states
SELECT id, state FROM orders WHERE id IN (SELECT value FROM json_each(?));

-- name: insert_factory_order
INSERT INTO factory_orders (order_id, factory, key, state, payload, next_attempt_at, created_at, updated_at)
VALUES (?, ?, ?, 'pending', ?, ?, ?, ?);

-- name: assign_line
UPDATE order_lines SET factory_order_id = (SELECT id FROM factory_orders WHERE key = ?)
WHERE order_id = ? AND line_id = ?;

-- name: claim_deliveries
UPDATE factory_orders SET lease_owner = ?, lease_expires_at = ?
WHERE id IN (
    SELECT id FROM factory_orders
    WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?
      AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
      AND factory IN (SELECT value FROM json_each(?))
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    ORDER BY next_attempt_at LIMIT ?
)
RETURNING id, order_id, factory, key, attempts, payload;

-- name: factory_orders_by_ids
SELECT id, order_id, state, attempts, factory FROM factory_orders WHERE id IN (SELECT value FROM json_each(?));

-- name: update_factory_order
UPDATE factory_orders
SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, dead_reason = ?, reference = COALESCE(?, reference),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
WHERE id = ?;

-- name: factory_orders_of_orders
SELECT order_id, id, state, dead_reason FROM factory_orders WHERE order_id IN (SELECT value FROM json_each(?));

-- name: line_totals_of_orders
-- Lines of a factory order cancelled at the factory no longer count towards "every line shipped".
SELECT order_id, SUM(quantity), SUM(MIN(shipped_quantity, quantity)) FROM order_lines
WHERE order_id IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM factory_orders f WHERE f.id = order_lines.factory_order_id AND f.state = 'cancelled')
GROUP BY order_id;

-- name: push_states_of_orders
SELECT order_id, state, dead_reason FROM storefront_pushes WHERE order_id IN (SELECT value FROM json_each(?));

-- name: message_seen
SELECT 1 FROM inbound_messages WHERE factory = ? AND message_id = ?;

-- name: remember_message
INSERT OR IGNORE INTO inbound_messages (factory, message_id, received_at) VALUES (?, ?, ?);

-- name: factory_order_for_shipment
SELECT f.id, f.order_id, f.factory, f.state, o.storefront, o.external_id, o.number
FROM factory_orders f JOIN orders o ON o.id = f.order_id WHERE f.key = ?;

-- name: shipment_exists
SELECT 1 FROM shipments WHERE factory_order_id = ? AND shipment_id = ?;

-- name: lines_of_order
SELECT line_id, quantity, shipped_quantity, factory_order_id FROM order_lines WHERE order_id = ?;

-- name: insert_shipment
INSERT INTO shipments (factory_order_id, order_id, shipment_id, carrier, tracking_number, tracking_url, lines,
                       received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: add_shipped_quantity
UPDATE order_lines SET shipped_quantity = shipped_quantity + ? WHERE order_id = ? AND line_id = ?;

-- name: insert_push
INSERT INTO storefront_pushes (shipment_id, order_id, storefront, key, state, payload, next_attempt_at,
                               created_at, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?);

-- name: claim_pushes
UPDATE storefront_pushes SET lease_owner = ?, lease_expires_at = ?
WHERE id IN (
    SELECT id FROM storefront_pushes
    WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?
      AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
      AND storefront IN (SELECT value FROM json_each(?))
    ORDER BY next_attempt_at LIMIT ?
)
RETURNING id, order_id, storefront, key, attempts, payload;

-- name: pushes_by_ids
SELECT id, order_id, state, attempts FROM storefront_pushes WHERE id IN (SELECT value FROM json_each(?));

-- name: update_push
UPDATE storefront_pushes
SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, dead_reason = ?, reference = COALESCE(?, reference),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
WHERE id = ?;

-- name: release_order_leases
UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?;

-- name: release_delivery_leases
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?;

-- name: release_cancellation_leases
UPDATE factory_cancellations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?;

-- name: release_push_leases
UPDATE storefront_pushes SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?;

-- name: next_due
SELECT MIN(t) FROM (
    SELECT MIN(next_attempt_at) AS t FROM factory_orders WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    UNION ALL
    SELECT MIN(next_attempt_at) FROM factory_cancellations WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    UNION ALL
    SELECT MIN(next_attempt_at) FROM storefront_pushes WHERE next_attempt_at IS NOT NULL
);

-- name: next_delivery_due
-- Earliest order.created / order.cancelled owed to an enabled factory not in the JSON list given.
SELECT MIN(t) FROM (
    SELECT MIN(next_attempt_at) AS t FROM factory_orders WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
      AND factory NOT IN (SELECT value FROM json_each(?1))
    UNION ALL
    SELECT MIN(next_attempt_at) FROM factory_cancellations WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
      AND factory NOT IN (SELECT value FROM json_each(?1))
);

-- name: next_push_due
SELECT MIN(next_attempt_at) FROM storefront_pushes WHERE next_attempt_at IS NOT NULL;

-- name: order_counts
SELECT state, attention_reason, COUNT(*) FROM orders GROUP BY state, attention_reason;

-- name: outbox_counts
SELECT 'factory_orders', state, COUNT(*) FROM factory_orders GROUP BY state
UNION ALL
SELECT 'storefront_pushes', state, COUNT(*) FROM storefront_pushes GROUP BY state;

-- name: quarantine_count
SELECT COUNT(*) FROM quarantine;

-- name: find_order
SELECT id, storefront, external_id, number, state, attention_reason, attention_detail, payload,
       created_at, updated_at
FROM orders WHERE id = ?;

-- name: find_order_by_external
SELECT id FROM orders WHERE storefront = ? AND external_id = ?;

-- name: list_orders
SELECT id, storefront, external_id, number, state, attention_reason, attention_detail, updated_at
FROM orders WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?;

-- name: factory_orders_of_order
SELECT f.id, f.factory, f.key, f.state, f.attempts, f.next_attempt_at, f.last_error, f.dead_reason, f.reference,
       c.state
FROM factory_orders f LEFT JOIN factory_cancellations c ON c.factory_order_id = f.id
WHERE f.order_id = ? ORDER BY f.id;

-- name: shipments_of_order
SELECT s.id, f.factory, s.shipment_id, s.carrier, s.tracking_number, s.tracking_url, s.lines, s.received_at,
       p.state, p.attempts, p.last_error, p.reference
FROM shipments s JOIN factory_orders f ON f.id = s.factory_order_id
LEFT JOIN storefront_pushes p ON p.shipment_id = s.id
WHERE s.order_id = ? ORDER BY s.id;

-- name: events_of_order
SELECT at, kind, from_state, to_state, detail FROM order_events WHERE order_id = ? ORDER BY id;

-- name: list_quarantine
SELECT storefront, external_id, reason, first_seen, last_seen, seen_count FROM quarantine ORDER BY id DESC LIMIT ?;

-- name: set_factory_order_shipped
UPDATE factory_orders SET state = ?, next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                          updated_at = ?
WHERE id = ?;

-- name: requeue_dead_factory_order
UPDATE factory_orders SET state = 'pending', attempts = 0, next_attempt_at = ?, dead_reason = NULL, updated_at = ?
WHERE id = ?;

-- name: requeue_dead_pushes
UPDATE storefront_pushes SET state = 'pending', attempts = 0, next_attempt_at = ?, dead_reason = NULL, updated_at = ?
WHERE order_id = ? AND state = 'dead';

-- name: replay_factory_order
UPDATE factory_orders SET state = 'pending', next_attempt_at = ?, updated_at = ? WHERE id = ?;

-- name: release_factory_order_lease
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?;

-- name: factory_orders_to_cancel
SELECT id, factory, key, state, attempts, lease_expires_at FROM factory_orders WHERE order_id = ? ORDER BY id;

-- name: cancel_factory_order_locally
-- Keeps any lease: an order.created in flight must finish before its order.cancelled is sent.
UPDATE factory_orders SET state = 'cancelled', next_attempt_at = NULL, last_error = ?, updated_at = ? WHERE id = ?;

-- name: insert_cancellation
INSERT OR IGNORE INTO factory_cancellations (factory_order_id, order_id, factory, key, state, next_attempt_at,
                                             requested_at, created_at, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?);

-- name: claim_cancellations
UPDATE factory_cancellations SET lease_owner = ?, lease_expires_at = ?
WHERE id IN (
    SELECT c.id FROM factory_cancellations c JOIN factory_orders f ON f.id = c.factory_order_id
    WHERE c.next_attempt_at IS NOT NULL AND c.next_attempt_at <= ?3
      AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= ?3)
      AND (f.lease_expires_at IS NULL OR f.lease_expires_at <= ?3)
      AND c.factory IN (SELECT value FROM json_each(?4))
      AND c.factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    ORDER BY c.next_attempt_at LIMIT ?5
)
RETURNING id, order_id, factory, key, attempts, requested_at,
          (SELECT payload FROM factory_orders WHERE factory_orders.id = factory_cancellations.factory_order_id);

-- name: cancellations_by_ids
SELECT c.id, c.order_id, c.factory_order_id, c.state, c.attempts, c.factory, f.state
FROM factory_cancellations c JOIN factory_orders f ON f.id = c.factory_order_id
WHERE c.id IN (SELECT value FROM json_each(?));

-- name: update_cancellation
UPDATE factory_cancellations
SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, lease_owner = NULL, lease_expires_at = NULL,
    updated_at = ?
WHERE id = ?;

-- name: release_cancellation_lease
UPDATE factory_cancellations SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?;

-- name: disable_factory
INSERT INTO factories (name, disabled_at, disabled_reason, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE
SET disabled_at = excluded.disabled_at, disabled_reason = excluded.disabled_reason, updated_at = excluded.updated_at
WHERE factories.disabled_at IS NULL;

-- name: enable_factory
UPDATE factories SET disabled_at = NULL, disabled_reason = NULL, updated_at = ? WHERE name = ? AND disabled_at IS NOT NULL;

-- name: list_factories
SELECT name, disabled_at, disabled_reason, shipment_cursor FROM factories ORDER BY name;

-- name: factory_order_counts
SELECT factory, state, COUNT(*) FROM factory_orders GROUP BY factory, state;

-- name: get_factory_cursor
SELECT shipment_cursor FROM factories WHERE name = ?;

-- name: set_factory_cursor
INSERT INTO factories (name, shipment_cursor, updated_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET shipment_cursor = excluded.shipment_cursor, updated_at = excluded.updated_at;
