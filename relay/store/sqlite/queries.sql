-- Named queries for the SQLite connector. Each block starts with "-- name: <name>".
-- Parameters are named (:name). A list parameter arrives as one JSON array (the connector encodes it)
-- and is read with json_each. Rows are read by column name: every computed column has an alias.

-- name: ping
SELECT 1 AS ok;

-- name: schema_version_table_exists
SELECT 1 AS found FROM sqlite_master WHERE name = 'schema_version';

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL);

-- name: schema_version
SELECT MAX(version) AS version FROM schema_version;

-- name: record_schema_version
INSERT INTO schema_version (version, applied_at) VALUES (:version, :applied_at);

-- name: get_cursor
SELECT cursor_iso FROM storefront_cursors WHERE storefront = :storefront;

-- name: set_cursor
INSERT INTO storefront_cursors (storefront, cursor_iso, updated_at) VALUES (:storefront, :cursor_iso, :now)
ON CONFLICT (storefront) DO UPDATE SET cursor_iso = excluded.cursor_iso, updated_at = excluded.updated_at
WHERE excluded.cursor_iso > storefront_cursors.cursor_iso;

-- name: orders_by_external_ids
SELECT id, external_id, state, source_updated_iso, payload, attention_reason, content_hash
FROM orders WHERE storefront = :storefront AND external_id IN (SELECT value FROM json_each(:external_ids));

-- name: insert_order
INSERT INTO orders (storefront, external_id, number, state, source_updated_iso, payload, content_hash, created_at,
                    updated_at)
VALUES (:storefront, :external_id, :number, :state, :source_updated_iso, :payload, :content_hash, :now, :now);

-- name: insert_order_line
INSERT INTO order_lines (order_id, line_id, sku, quantity)
VALUES ((SELECT id FROM orders WHERE storefront = :storefront AND external_id = :external_id), :line_id, :sku,
        :quantity);

-- name: insert_event_by_external_id
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail)
VALUES ((SELECT id FROM orders WHERE storefront = :storefront AND external_id = :external_id), :at, :kind,
        :from_state, :to_state, :detail);

-- name: insert_event
INSERT INTO order_events (order_id, at, kind, from_state, to_state, detail)
VALUES (:order_id, :at, :kind, :from_state, :to_state, :detail);

-- name: update_order_payload
UPDATE orders SET payload = :payload, number = :number, source_updated_iso = :source_updated_iso,
                  content_hash = :content_hash, updated_at = :now
WHERE id = :order_id;

-- name: replace_order_lines_delete
DELETE FROM order_lines WHERE order_id = :order_id AND factory_order_id IS NULL;

-- name: insert_order_line_by_id
INSERT OR IGNORE INTO order_lines (order_id, line_id, sku, quantity) VALUES (:order_id, :line_id, :sku, :quantity);

-- name: set_order_state
-- A sticky flag (models.STICKY_ATTENTION, checked equal by tests/unit/test_store_contract.py) stays through
-- later state changes until a person acts.
UPDATE orders SET state = :state,
                  attention_reason = CASE WHEN :reason IS NULL AND attention_reason IN
                                              ('cancel_rejected', 'changed_after_placement', 'shipped_after_cancel',
                                               'refund_required', 'duplicate_at_factory')
                                          THEN attention_reason ELSE :reason END,
                  attention_detail = CASE WHEN :reason IS NULL AND attention_reason IN
                                              ('cancel_rejected', 'changed_after_placement', 'shipped_after_cancel',
                                               'refund_required', 'duplicate_at_factory')
                                          THEN attention_detail ELSE :detail END,
                  updated_at = :now, lease_owner = NULL, lease_expires_at = NULL
WHERE id = :order_id;

-- name: flag_order
UPDATE orders SET attention_reason = :reason, attention_detail = :detail, updated_at = :now WHERE id = :order_id;

-- name: quarantine
INSERT INTO quarantine (storefront, external_id, reason, raw, first_seen, last_seen)
VALUES (:storefront, :external_id, :reason, :raw, :now, :now)
ON CONFLICT (storefront, external_id, reason)
DO UPDATE SET last_seen = excluded.last_seen, raw = excluded.raw, seen_count = seen_count + 1;

-- name: claim_orders_to_route
UPDATE orders SET lease_owner = :owner, lease_expires_at = :lease_expires_at
WHERE id IN (
    SELECT id FROM orders
    WHERE state = 'received' AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
    ORDER BY id LIMIT :limit
)
RETURNING id, storefront, payload, content_hash, guards_waived_hash;

-- name: order_states
SELECT id, state FROM orders WHERE id IN (SELECT value FROM json_each(:order_ids));

-- name: order_refs
SELECT id, storefront, external_id, number, created_at FROM orders
WHERE id IN (SELECT value FROM json_each(:order_ids));

-- name: order_refs_by_external_ids
SELECT id, storefront, external_id, number, created_at FROM orders
WHERE storefront = :storefront AND external_id IN (SELECT value FROM json_each(:external_ids));

-- name: insert_factory_order
INSERT INTO factory_orders (order_id, factory, key, state, payload, next_attempt_at, created_at, updated_at)
VALUES (:order_id, :factory, :key, 'pending', :payload, :now, :now, :now);

-- name: assign_line
UPDATE order_lines SET factory_order_id = (SELECT id FROM factory_orders WHERE key = :key)
WHERE order_id = :order_id AND line_id = :line_id;

-- name: claim_deliveries
-- `claimed`: once claimed, a delivery may have reached the factory (migrations 4 and 10).
-- INDEXED BY: the owed rows of the claimed factories only, each in due order (migration 12). Left to
-- itself SQLite prefers `factory_orders_by_factory` (an equality beats a range), which visits every factory
-- order the factory ever had (issue 15: the claim took ~100 ms at 100k stored orders, ~1 s at 1M); through
-- `factory_orders_due` it walks every other factory's due rows first (a disabled factory, or one with an
-- open circuit, holding 100k owed rows: ~23 ms per claim). Disabled factories leave the list of factories
-- before the search, not row by row (a claim for a disabled factory with 100k owed rows: ~20 ms -> 0.1 ms).
-- ORDER BY factory first: the index's order, no sort (the loops claim one factory at a time).
UPDATE factory_orders SET lease_owner = :owner, lease_expires_at = :lease_expires_at,
                          lease_token = lease_token + 1, claimed = 1
WHERE id IN (
    SELECT id FROM factory_orders INDEXED BY factory_orders_due_by_factory
    WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
      AND factory IN (SELECT value FROM json_each(:factories)
                      WHERE value NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL))
    ORDER BY factory, next_attempt_at LIMIT :limit
)
RETURNING id, order_id, factory, key, attempts, payload, lease_token;

-- name: factory_orders_by_ids
SELECT id, order_id, state, attempts, factory, lease_token FROM factory_orders WHERE id IN (SELECT value FROM json_each(:ids));

-- name: update_factory_order
UPDATE factory_orders
SET state = :state, attempts = :attempts, next_attempt_at = :next_attempt_at, last_error = :error,
    dead_reason = :dead_reason, reference = COALESCE(:reference, reference),
    amount = COALESCE(:amount, amount), currency = COALESCE(:currency, currency),
    pay_deadline_iso = COALESCE(:pay_deadline_iso, pay_deadline_iso),
    attention = CASE WHEN :state = 'placed' THEN :attention ELSE attention END,
    placed_at = CASE WHEN :state = 'placed' THEN COALESCE(placed_at, :now) ELSE placed_at END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id;

-- name: factory_orders_of_orders
SELECT order_id, id, state, dead_reason FROM factory_orders WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- name: line_totals_of_orders
-- Lines of a factory order cancelled at the factory no longer count towards "every line shipped", nor does
-- the cancelled rest of a line (a cancellation after a partial shipment).
SELECT order_id, SUM(quantity - cancelled_quantity) AS total,
       SUM(MIN(shipped_quantity, quantity - cancelled_quantity)) AS shipped FROM order_lines
WHERE order_id IN (SELECT value FROM json_each(:order_ids))
  AND NOT EXISTS (SELECT 1 FROM factory_orders f WHERE f.id = order_lines.factory_order_id AND f.state = 'cancelled')
GROUP BY order_id;

-- name: push_states_of_orders
SELECT order_id, state, dead_reason FROM storefront_pushes WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- name: messages_seen
SELECT message_id FROM inbound_messages
WHERE factory = :factory AND message_id IN (SELECT value FROM json_each(:message_ids));

-- name: remember_message
INSERT OR IGNORE INTO inbound_messages (factory, message_id, received_at) VALUES (:factory, :message_id, :now);

-- name: factory_orders_for_shipments
SELECT f.key AS key, f.id AS id, f.order_id AS order_id, f.factory AS factory, f.state AS state,
       o.storefront AS storefront, o.external_id AS external_id, o.number AS number
FROM factory_orders f JOIN orders o ON o.id = f.order_id WHERE f.key IN (SELECT value FROM json_each(:keys));

-- name: shipments_of_factory_orders
SELECT factory_order_id, shipment_id FROM shipments
WHERE factory_order_id IN (SELECT value FROM json_each(:factory_order_ids));

-- name: lines_of_orders
SELECT order_id, line_id, quantity, shipped_quantity, cancelled_quantity, factory_order_id FROM order_lines
WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- name: insert_shipment
INSERT INTO shipments (factory_order_id, order_id, shipment_id, carrier, tracking_number, tracking_url, lines,
                       received_at)
VALUES (:factory_order_id, :order_id, :shipment_id, :carrier, :tracking_number, :tracking_url, :lines, :now);

-- name: add_shipped_quantity
UPDATE order_lines SET shipped_quantity = shipped_quantity + :quantity WHERE order_id = :order_id AND line_id = :line_id;

-- name: insert_push_for_parcel
-- The push of the parcel `:shipment_id` of factory order `:factory_order_id` (inserted before it).
INSERT INTO storefront_pushes (shipment_id, order_id, storefront, key, state, payload, next_attempt_at,
                               created_at, updated_at)
VALUES ((SELECT id FROM shipments WHERE factory_order_id = :factory_order_id AND shipment_id = :shipment_id),
        :order_id, :storefront, :key, 'pending', :payload, :now, :now, :now);

-- name: claim_pushes
UPDATE storefront_pushes SET lease_owner = :owner, lease_expires_at = :lease_expires_at,
                             lease_token = lease_token + 1
WHERE id IN (
    SELECT id FROM storefront_pushes
    WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
      AND storefront IN (SELECT value FROM json_each(:storefronts))
    ORDER BY next_attempt_at LIMIT :limit
)
RETURNING id, order_id, storefront, key, attempts, payload, lease_token, settled_token;

-- name: pushes_by_ids
SELECT id, order_id, state, attempts, lease_token FROM storefront_pushes WHERE id IN (SELECT value FROM json_each(:ids));

-- name: update_push
-- :settled: the outcome is definite (pushed): every claim so far is accounted for (settled_token).
UPDATE storefront_pushes
SET state = :state, attempts = :attempts, next_attempt_at = :next_attempt_at, last_error = :error,
    dead_reason = :dead_reason, reference = COALESCE(:reference, reference),
    settled_token = CASE WHEN :settled THEN lease_token ELSE settled_token END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id;

-- name: release_order_leases
UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = :owner;

-- name: release_delivery_leases
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = :owner;

-- name: release_cancellation_leases
UPDATE factory_cancellations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = :owner;

-- name: release_push_leases
UPDATE storefront_pushes SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = :owner;

-- name: next_due
SELECT MIN(t) AS due FROM (
    SELECT MIN(next_attempt_at) AS t FROM factory_orders WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    UNION ALL
    SELECT MIN(next_attempt_at) FROM factory_cancellations WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    UNION ALL
    SELECT MIN(next_attempt_at) FROM storefront_pushes WHERE next_attempt_at IS NOT NULL
);

-- name: next_delivery_due
-- Earliest order.created / order.cancelled owed to an enabled factory not in :excluding.
SELECT MIN(t) AS due FROM (
    SELECT MIN(next_attempt_at) AS t FROM factory_orders WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
      AND factory NOT IN (SELECT value FROM json_each(:excluding))
    UNION ALL
    SELECT MIN(next_attempt_at) FROM factory_cancellations WHERE next_attempt_at IS NOT NULL
      AND factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
      AND factory NOT IN (SELECT value FROM json_each(:excluding))
);

-- name: next_push_due
SELECT MIN(next_attempt_at) AS due FROM storefront_pushes WHERE next_attempt_at IS NOT NULL;

-- name: order_counts
SELECT state, attention_reason, COUNT(*) AS count FROM orders GROUP BY state, attention_reason;

-- name: outbox_counts
SELECT 'factory_orders' AS outbox, state, COUNT(*) AS count FROM factory_orders GROUP BY state
UNION ALL
SELECT 'storefront_pushes', state, COUNT(*) FROM storefront_pushes GROUP BY state;

-- name: quarantine_count
SELECT COUNT(*) AS count FROM quarantine;

-- name: find_order
SELECT id, storefront, external_id, number, state, attention_reason, attention_detail, payload,
       created_at, updated_at
FROM orders WHERE id = :order_id;

-- name: find_order_by_external
SELECT id FROM orders WHERE storefront = :storefront AND external_id = :external_id;


-- name: factory_orders_of_order
SELECT f.id AS id, f.factory AS factory, f.key AS key, f.state AS state, f.attempts AS attempts,
       f.next_attempt_at AS next_attempt_at, f.last_error AS last_error, f.dead_reason AS dead_reason,
       f.reference AS reference, c.state AS cancel_state, f.amount AS amount, f.currency AS currency,
       f.pay_deadline_iso AS pay_deadline_iso, f.attention AS attention
FROM factory_orders f LEFT JOIN factory_cancellations c ON c.factory_order_id = f.id
WHERE f.order_id = :order_id ORDER BY f.id;

-- name: shipments_of_order
SELECT s.id AS id, f.factory AS factory, s.shipment_id AS shipment_id, s.carrier AS carrier,
       s.tracking_number AS tracking_number, s.tracking_url AS tracking_url, s.lines AS lines,
       s.received_at AS received_at, p.state AS push_state, p.attempts AS push_attempts,
       p.last_error AS push_error, p.reference AS push_reference
FROM shipments s JOIN factory_orders f ON f.id = s.factory_order_id
LEFT JOIN storefront_pushes p ON p.shipment_id = s.id
WHERE s.order_id = :order_id ORDER BY s.id;

-- name: events_of_order
SELECT at, kind, from_state, to_state, detail FROM order_events WHERE order_id = :order_id ORDER BY id;

-- name: set_factory_order_shipped
UPDATE factory_orders SET state = :state, next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                          updated_at = :now
WHERE id = :id;

-- name: requeue_dead_factory_order
UPDATE factory_orders SET state = 'pending', attempts = 0, next_attempt_at = :now, dead_reason = NULL,
                          updated_at = :now
WHERE id = :id;

-- name: requeue_dead_pushes
UPDATE storefront_pushes SET state = 'pending', attempts = 0, next_attempt_at = :now, dead_reason = NULL,
                             updated_at = :now
WHERE order_id = :order_id AND state = 'dead';

-- name: replay_factory_order
UPDATE factory_orders SET state = 'pending', next_attempt_at = :now, updated_at = :now WHERE id = :id;

-- name: release_factory_order_lease
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL WHERE id = :id;

-- name: factory_orders_to_cancel
SELECT id, factory, key, state, attempts, claimed, lease_expires_at, payload FROM factory_orders WHERE order_id = :order_id
ORDER BY id;

-- name: cancel_factory_order_locally
-- Keeps any lease: an order.created in flight must finish before its order.cancelled is sent.
UPDATE factory_orders SET state = 'cancelled', next_attempt_at = NULL, last_error = :error, updated_at = :now
WHERE id = :id;

-- name: insert_cancellation
INSERT OR IGNORE INTO factory_cancellations (factory_order_id, order_id, factory, key, state, next_attempt_at,
                                             requested_at, payload, created_at, updated_at)
VALUES (:factory_order_id, :order_id, :factory, :key, 'pending', :now, :now, :payload, :now, :now);

-- name: claim_cancellations
UPDATE factory_cancellations SET lease_owner = :owner, lease_expires_at = :lease_expires_at,
                                 lease_token = lease_token + 1
WHERE id IN (
    SELECT c.id FROM factory_cancellations c JOIN factory_orders f ON f.id = c.factory_order_id
    WHERE c.next_attempt_at IS NOT NULL AND c.next_attempt_at <= :now
      AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= :now)
      AND (f.lease_expires_at IS NULL OR f.lease_expires_at <= :now)
      AND c.factory IN (SELECT value FROM json_each(:factories))
      AND c.factory NOT IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL)
    ORDER BY c.next_attempt_at LIMIT :limit
)
RETURNING id, order_id, factory, key, attempts, requested_at, lease_token,
          COALESCE(payload, (SELECT payload FROM factory_orders
                             WHERE factory_orders.id = factory_cancellations.factory_order_id)) AS payload;

-- name: cancellations_by_ids
SELECT c.id AS id, c.order_id AS order_id, c.factory_order_id AS factory_order_id, c.state AS state,
       c.attempts AS attempts, c.factory AS factory, f.state AS fo_state, c.lease_token AS lease_token
FROM factory_cancellations c JOIN factory_orders f ON f.id = c.factory_order_id
WHERE c.id IN (SELECT value FROM json_each(:ids));

-- name: update_cancellation
UPDATE factory_cancellations
SET state = :state, attempts = :attempts, next_attempt_at = :next_attempt_at, last_error = :error,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE id = :id;

-- name: release_cancellation_lease
UPDATE factory_cancellations SET lease_owner = NULL, lease_expires_at = NULL WHERE id = :id;

-- name: disable_factory
INSERT INTO factories (name, disabled_at, disabled_reason, updated_at) VALUES (:name, :now, :reason, :now)
ON CONFLICT (name) DO UPDATE
SET disabled_at = excluded.disabled_at, disabled_reason = excluded.disabled_reason, updated_at = excluded.updated_at
WHERE factories.disabled_at IS NULL;

-- name: enable_factory
UPDATE factories SET disabled_at = NULL, disabled_reason = NULL, updated_at = :now
WHERE name = :name AND disabled_at IS NOT NULL;

-- name: list_factories
SELECT name, disabled_at, disabled_reason, shipment_cursor, failing_since, next_probe_at, last_error
FROM factories ORDER BY name;

-- name: factory_order_counts
SELECT factory, state, COUNT(*) AS count FROM factory_orders GROUP BY factory, state;

-- name: get_factory_cursor
SELECT shipment_cursor FROM factories WHERE name = :name;

-- name: set_factory_cursor
INSERT INTO factories (name, shipment_cursor, updated_at) VALUES (:name, :cursor, :now)
ON CONFLICT (name) DO UPDATE SET shipment_cursor = excluded.shipment_cursor, updated_at = excluded.updated_at;

-- Order versions, edits, cancellations after a partial shipment, late parcels.

-- name: order_versions
SELECT id, state, content_hash, payload FROM orders WHERE id IN (SELECT value FROM json_each(:order_ids));

-- name: release_order_lease
UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE id = :order_id;

-- name: factory_orders_for_replan
SELECT id, state, attempts, claimed, lease_owner, lease_expires_at FROM factory_orders WHERE order_id = :order_id;

-- name: unassign_order_lines
UPDATE order_lines SET factory_order_id = NULL WHERE order_id = :order_id;

-- name: delete_factory_orders_of_order
-- Only for factory orders never claimed (they cannot have reached a factory): see factory_orders.claimed.
DELETE FROM factory_orders WHERE order_id = :order_id AND claimed = 0 AND state = 'pending';

-- name: lines_of_factory_order
SELECT line_id, quantity, shipped_quantity, cancelled_quantity FROM order_lines
WHERE factory_order_id = :factory_order_id ORDER BY line_id;

-- name: cancel_unshipped_rest
-- The factory cancelled what it had not shipped: the rest of each of its lines no longer has to ship.
UPDATE order_lines SET cancelled_quantity = MAX(0, quantity - shipped_quantity)
WHERE factory_order_id = :factory_order_id;

-- Retention (relay/store/transitions/retention.py).

-- name: prune_inbound_messages
DELETE FROM inbound_messages WHERE (factory, message_id) IN (
    SELECT factory, message_id FROM inbound_messages WHERE received_at < :before
    ORDER BY received_at LIMIT :limit
);

-- name: count_inbound_messages_before
SELECT count(*) AS n FROM inbound_messages WHERE received_at < :before;

-- name: final_orders_to_prune
-- One bounded batch of orders in final state :state, final since before :before (the retention cutoff),
-- after (:after_at, :after_id) in (updated_at, id) order: `orders_by_state_and_age` gives them without
-- sorting, and no younger order is looked at (migration 13). Each with whether its history may go: history
-- left (first: two index probes for an order pruned before), no attention, no lease, nothing owed or in
-- flight in any outbox. An order updated meanwhile only moves forward, past the batch.
SELECT o.id AS id, o.updated_at AS updated_at,
       ((EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id)
         OR EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = o.id))
        AND o.attention_reason IS NULL AND o.lease_owner IS NULL
        AND NOT EXISTS (SELECT 1 FROM factory_orders f WHERE f.order_id = o.id
                        AND (f.next_attempt_at IS NOT NULL OR f.lease_owner IS NOT NULL))
        AND NOT EXISTS (SELECT 1 FROM storefront_pushes p WHERE p.order_id = o.id
                        AND (p.next_attempt_at IS NOT NULL OR p.lease_owner IS NOT NULL))
        AND NOT EXISTS (SELECT 1 FROM factory_cancellations c WHERE c.order_id = o.id
                        AND (c.next_attempt_at IS NOT NULL OR c.lease_owner IS NOT NULL))) AS prunable
FROM orders o
WHERE o.state = :state AND o.updated_at < :before
  AND (o.updated_at, o.id) > (:after_at, :after_id)
ORDER BY o.updated_at, o.id LIMIT :limit;

-- name: history_of_orders
SELECT (SELECT count(*) FROM order_events WHERE order_id IN (SELECT value FROM json_each(:order_ids))) AS events,
       (SELECT count(*) FROM shipments WHERE order_id IN (SELECT value FROM json_each(:order_ids))) AS shipments,
       (SELECT count(*) FROM storefront_pushes WHERE order_id IN (SELECT value FROM json_each(:order_ids))) AS pushes;

-- name: prune_pushes_of_orders
DELETE FROM storefront_pushes WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- name: prune_shipments_of_orders
DELETE FROM shipments WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- name: prune_events_of_orders
DELETE FROM order_events WHERE order_id IN (SELECT value FROM json_each(:order_ids));

-- Leases and fencing (ADR 11).

-- name: release_all_order_leases
-- Start-up of the daemon holding the database's daemon lock: no other daemon is alive to hold a lease.
UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL;

-- name: release_all_delivery_leases
UPDATE factory_orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL;

-- name: release_all_cancellation_leases
UPDATE factory_cancellations SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL;

-- name: release_all_push_leases
UPDATE storefront_pushes SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL;

-- name: delivery_leases
-- The pre-send check: is each claimed factory order still owed, and still leased under the job's token?
SELECT id, state, lease_token, lease_expires_at FROM factory_orders WHERE id IN (SELECT value FROM json_each(:ids));

-- name: cancellation_leases
SELECT id, state, lease_token, lease_expires_at FROM factory_cancellations
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: push_leases
SELECT id, state, lease_token, lease_expires_at FROM storefront_pushes WHERE id IN (SELECT value FROM json_each(:ids));

-- name: renew_delivery_lease
UPDATE factory_orders SET lease_expires_at = :lease_expires_at
WHERE id = :id AND lease_token = :lease_token AND state = 'pending';

-- name: renew_cancellation_lease
UPDATE factory_cancellations SET lease_expires_at = :lease_expires_at
WHERE id = :id AND lease_token = :lease_token AND state = 'pending';

-- name: renew_push_lease
UPDATE storefront_pushes SET lease_expires_at = :lease_expires_at
WHERE id = :id AND lease_token = :lease_token AND state = 'pending';

-- name: set_order_stamp
UPDATE orders SET source_updated_iso = :source_updated_iso WHERE id = :order_id;

-- name: defer_push
-- A throttled push (the storefront's schedule, not a failed attempt): due again then, attempts unchanged.
-- Nothing was written, so this claim is settled when every earlier one was (settled_token, migration 9).
UPDATE storefront_pushes
SET next_attempt_at = :next_attempt_at, last_error = :error, lease_owner = NULL, lease_expires_at = NULL,
    settled_token = CASE WHEN settled_token = lease_token - 1 THEN lease_token ELSE settled_token END,
    updated_at = :now
WHERE id = :id AND state = 'pending';

-- name: release_push_lease
-- Not sent at all: settled like a throttled claim (see defer_push).
UPDATE storefront_pushes
SET lease_owner = NULL, lease_expires_at = NULL,
    settled_token = CASE WHEN settled_token = lease_token - 1 THEN lease_token ELSE settled_token END
WHERE id = :id;

-- name: factory_order_for_notice
SELECT f.id AS id, f.order_id AS order_id, f.state AS state, f.attention AS attention, o.state AS order_state,
       o.attention_reason AS attention_reason
FROM factory_orders f JOIN orders o ON o.id = f.order_id WHERE f.key = :key AND f.factory = :factory;

-- name: set_factory_order_attention
UPDATE factory_orders SET attention = :attention, updated_at = :now WHERE id = :id;

-- name: payment_flags_of_orders
-- The payment flags of placed factory orders (issue 14): what `sync_payment_flags` shows on the order.
SELECT o.id AS order_id, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       f.factory AS factory, f.attention AS attention, f.pay_deadline_iso AS pay_deadline_iso,
       f.reference AS reference
FROM orders o LEFT JOIN factory_orders f ON f.order_id = o.id AND f.state = 'placed' AND f.attention IS NOT NULL
WHERE o.id IN (SELECT value FROM json_each(:order_ids))
ORDER BY o.id, f.id;

-- --- the SKU catalogue (issue 13) ---------------------------------------------------------------------

-- name: list_skus
SELECT storefront, sku, factory, factory_sku, unit_cost, currency, priority, active, source
FROM sku_catalogue ORDER BY storefront, sku, priority, factory;

-- name: upsert_sku
INSERT INTO sku_catalogue (storefront, sku, factory, factory_sku, unit_cost, currency, priority, active, source, updated_at)
VALUES (:storefront, :sku, :factory, :factory_sku, :unit_cost, :currency, :priority, :active, :source, :now)
ON CONFLICT (storefront, sku, factory) DO UPDATE
SET factory_sku = excluded.factory_sku, unit_cost = excluded.unit_cost, currency = excluded.currency,
    priority = excluded.priority, active = excluded.active, source = excluded.source,
    updated_at = excluded.updated_at;

-- name: delete_sku
DELETE FROM sku_catalogue WHERE storefront = :storefront AND sku = :sku AND factory = :factory;

-- name: bump_catalogue_version
UPDATE catalogue_version SET version = version + 1 WHERE id = 1;

-- name: routing_snapshot
SELECT (SELECT version FROM catalogue_version WHERE id = 1) AS version,
       (SELECT json_group_array(name) FROM factories WHERE disabled_at IS NOT NULL) AS disabled;

-- name: waive_guards
UPDATE orders SET guards_waived_hash = :content_hash WHERE id = :order_id;

-- Operators (issue 12): status, filtered listings, order references, poll and circuit health.
-- list_orders_*: one query per driving filter, each walking its index newest first; the other filters
-- (NULL: not given) are checked on the rows the index yields. Only the LIMIT newest matches are read.

-- name: list_orders_by_state
SELECT o.id AS id, o.storefront AS storefront, o.external_id AS external_id, o.number AS number,
       o.state AS state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       o.updated_at AS updated_at, o.created_at AS created_at
FROM orders o
WHERE o.state = :state
  AND (:storefront IS NULL OR o.storefront = :storefront) AND (:reason IS NULL OR o.attention_reason = :reason)
  AND (:since IS NULL OR o.updated_at >= :since)
  AND (:factory IS NULL OR EXISTS (SELECT 1 FROM factory_orders f WHERE f.order_id = o.id AND f.factory = :factory))
ORDER BY o.id DESC LIMIT :limit;

-- name: list_orders_by_reason
SELECT o.id AS id, o.storefront AS storefront, o.external_id AS external_id, o.number AS number,
       o.state AS state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       o.updated_at AS updated_at, o.created_at AS created_at
FROM orders o
WHERE o.attention_reason = :reason
  AND (:storefront IS NULL OR o.storefront = :storefront) AND (:state IS NULL OR o.state = :state)
  AND (:since IS NULL OR o.updated_at >= :since)
  AND (:factory IS NULL OR EXISTS (SELECT 1 FROM factory_orders f WHERE f.order_id = o.id AND f.factory = :factory))
ORDER BY o.id DESC LIMIT :limit;

-- name: list_orders_by_factory
SELECT o.id AS id, o.storefront AS storefront, o.external_id AS external_id, o.number AS number,
       o.state AS state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       o.updated_at AS updated_at, o.created_at AS created_at
FROM factory_orders f JOIN orders o ON o.id = f.order_id
WHERE f.factory = :factory
  AND (:storefront IS NULL OR o.storefront = :storefront) AND (:state IS NULL OR o.state = :state)
  AND (:reason IS NULL OR o.attention_reason = :reason) AND (:since IS NULL OR o.updated_at >= :since)
ORDER BY f.order_id DESC LIMIT :limit;

-- name: list_orders_by_storefront
SELECT o.id AS id, o.storefront AS storefront, o.external_id AS external_id, o.number AS number,
       o.state AS state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       o.updated_at AS updated_at, o.created_at AS created_at
FROM orders o
WHERE o.storefront = :storefront
  AND (:since IS NULL OR o.updated_at >= :since)
ORDER BY o.id DESC LIMIT :limit;

-- name: list_orders_all
SELECT o.id AS id, o.storefront AS storefront, o.external_id AS external_id, o.number AS number,
       o.state AS state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail,
       o.updated_at AS updated_at, o.created_at AS created_at
FROM orders o
WHERE (:since IS NULL OR o.updated_at >= :since)
ORDER BY o.id DESC LIMIT :limit;

-- name: order_exists
SELECT id FROM orders WHERE id = :order_id;

-- name: orders_by_number
SELECT id FROM orders WHERE number IN (SELECT value FROM json_each(:numbers)) ORDER BY id;

-- name: record_poll_ok
INSERT INTO storefronts (name, last_poll_ok_at, updated_at) VALUES (:name, :now, :now)
ON CONFLICT (name) DO UPDATE SET last_poll_ok_at = excluded.last_poll_ok_at, updated_at = excluded.updated_at;

-- name: record_poll_error
INSERT INTO storefronts (name, last_poll_error_at, last_error, updated_at) VALUES (:name, :now, :error, :now)
ON CONFLICT (name) DO UPDATE SET last_poll_error_at = excluded.last_poll_error_at,
                                 last_error = excluded.last_error, updated_at = excluded.updated_at;

-- name: storefront_statuses
SELECT s.name AS name, c.cursor_iso AS cursor_iso, s.last_poll_ok_at AS last_poll_ok_at,
       s.last_poll_error_at AS last_poll_error_at, s.last_error AS last_error
FROM storefronts s LEFT JOIN storefront_cursors c ON c.storefront = s.name
UNION ALL
SELECT c.storefront, c.cursor_iso, NULL, NULL, NULL FROM storefront_cursors c
WHERE c.storefront NOT IN (SELECT name FROM storefronts)
ORDER BY name;

-- name: record_factory_health
INSERT INTO factories (name, failing_since, next_probe_at, last_error, updated_at)
VALUES (:name, :failing_since, :next_probe_at, :error, :now)
ON CONFLICT (name) DO UPDATE SET failing_since = excluded.failing_since, next_probe_at = excluded.next_probe_at,
                                 last_error = excluded.last_error, updated_at = excluded.updated_at;

-- name: order_state_counts
-- Reads only the orders_by_state index (covering).
SELECT state, COUNT(*) AS count FROM orders GROUP BY state;

-- name: attention_orders
-- Only the flagged orders (the partial index), never the whole table.
SELECT id, storefront, number, state, attention_reason, attention_detail, updated_at
FROM orders INDEXED BY orders_by_attention
WHERE attention_reason IS NOT NULL ORDER BY id DESC LIMIT :limit;

-- name: dead_letters
-- Each outbox's dead rows through its partial index (only dead rows), newest first.
SELECT kind, order_id, number, destination, attempts, last_error, since FROM (
    SELECT 'delivery' AS kind, f.order_id AS order_id, o.number AS number, f.factory AS destination,
           f.attempts AS attempts, f.last_error AS last_error, f.updated_at AS since
    FROM factory_orders f JOIN orders o ON o.id = f.order_id WHERE f.state = 'dead'
    UNION ALL
    SELECT 'cancel', c.order_id, o.number, c.factory, c.attempts, c.last_error, c.updated_at
    FROM factory_cancellations c JOIN orders o ON o.id = c.order_id WHERE c.state = 'dead'
    UNION ALL
    SELECT 'push', p.order_id, o.number, p.storefront, p.attempts, p.last_error, p.updated_at
    FROM storefront_pushes p JOIN orders o ON o.id = p.order_id WHERE p.state = 'dead'
) ORDER BY since DESC LIMIT :limit;

-- name: oldest_pending
-- The oldest work owed: received orders (orders_by_state), messages to factories and tracking pushes (the
-- outbox's partial indexes: only rows owed).
SELECT MIN(t) AS oldest FROM (
    SELECT MIN(updated_at) AS t FROM orders WHERE state = 'received'
    UNION ALL
    SELECT MIN(created_at) FROM factory_orders WHERE next_attempt_at IS NOT NULL
    UNION ALL
    SELECT MIN(requested_at) FROM factory_cancellations WHERE next_attempt_at IS NOT NULL
    UNION ALL
    SELECT MIN(created_at) FROM storefront_pushes WHERE next_attempt_at IS NOT NULL
);

-- name: events_per_minute
-- Bounded by the window: order_events_by_kind (kind, at) yields only the window's events of that kind.
SELECT CAST(at / 60 AS INTEGER) * 60 AS minute, COUNT(*) AS count FROM order_events
WHERE kind = :kind AND at >= :since AND at <= :now
GROUP BY minute ORDER BY minute;

-- name: find_order_version
SELECT content_hash, payload FROM orders WHERE id = :order_id;

-- name: factory_order_payload
SELECT payload FROM factory_orders WHERE id = :id;

-- name: factories_of_order
SELECT factory FROM factory_orders WHERE order_id = :order_id;

-- name: never_sent_factory_orders
-- Pending factory orders of these factories (or of disabled ones) that were never claimed: none of them can
-- have reached its factory, so their lines may go to a fallback factory.
SELECT id, order_id, factory FROM factory_orders
WHERE state = 'pending' AND claimed = 0 AND lease_owner IS NULL AND attempts = 0
  AND (factory IN (SELECT value FROM json_each(:factories))
       OR factory IN (SELECT name FROM factories WHERE disabled_at IS NOT NULL))
ORDER BY id;

-- name: orders_with_dead_letters
-- Through the outboxes' partial indexes on dead rows; held orders wait for `relay release`.
SELECT order_id FROM factory_orders WHERE state = 'dead'
UNION
SELECT order_id FROM storefront_pushes WHERE state = 'dead'
EXCEPT
SELECT id FROM orders WHERE state = 'held'
ORDER BY 1;

-- name: orders_routed_since
SELECT o.storefront AS storefront, COUNT(DISTINCT f.order_id) AS count
FROM factory_orders f JOIN orders o ON o.id = f.order_id
WHERE f.created_at >= :since GROUP BY o.storefront;

-- --- the tracking watchdog (issue 13) -----------------------------------------------------------------

-- name: tracking_watch
-- Placed and partially shipped factory orders of these factories: when placed, their last parcel, their order.
SELECT f.id AS id, f.order_id AS order_id, f.factory AS factory, f.state AS state, f.reference AS reference,
       COALESCE(f.placed_at, f.updated_at) AS placed_at,
       (SELECT MAX(s.received_at) FROM shipments s WHERE s.factory_order_id = f.id) AS last_parcel_at,
       o.state AS order_state, o.attention_reason AS attention_reason, o.attention_detail AS attention_detail
FROM factory_orders f JOIN orders o ON o.id = f.order_id
WHERE f.state IN ('placed', 'partially_shipped') AND f.factory IN (SELECT value FROM json_each(:factories))
ORDER BY f.order_id, f.id;

-- name: tracking_flagged_orders
SELECT id, state, attention_reason FROM orders
WHERE attention_reason IS NOT NULL AND attention_reason IN ('no_tracking', 'tracking_stalled');

-- --- poller leases (issue 16, ADR 14: one poller per storefront and per polled factory) -------------------

-- name: get_poller_lease
SELECT name, owner, token, expires_at FROM poller_leases WHERE name = :name;

-- name: acquire_poller_lease
-- Free (released or never taken), expired, or already ours: take it (a new owner adds 1 to the token) or
-- renew it; otherwise no row is returned.
INSERT INTO poller_leases (name, owner, token, expires_at, acquired_at)
VALUES (:name, :owner, 1, :expires_at, :now)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN poller_leases.owner = excluded.owner THEN poller_leases.token ELSE poller_leases.token + 1 END,
    acquired_at = CASE WHEN poller_leases.owner = excluded.owner THEN poller_leases.acquired_at
                       ELSE excluded.acquired_at END,
    owner = excluded.owner,
    expires_at = excluded.expires_at
WHERE poller_leases.owner IS NULL OR poller_leases.owner = excluded.owner
   OR poller_leases.expires_at <= excluded.acquired_at
RETURNING name, owner, token, expires_at;

-- name: renew_poller_lease
-- The fence of a poller's write: its lease still holds its token (no one took it since); renewed to the
-- owner's now + lease_s, not the later of the two: an expiry set far ahead by a clock that ran fast does not stick.
UPDATE poller_leases SET expires_at = :expires_at
WHERE name = :name AND owner = :owner AND token = :token;

-- name: release_poller_lease
UPDATE poller_leases SET owner = NULL WHERE name = :name AND owner = :owner AND token = :token;

-- name: release_poller_leases
UPDATE poller_leases SET owner = NULL WHERE owner = :owner;

-- name: release_all_poller_leases
UPDATE poller_leases SET owner = NULL WHERE owner IS NOT NULL;
