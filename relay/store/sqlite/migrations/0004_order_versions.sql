-- relay schema, version 4: order versions (issue 11, items 3 to 7).
--
-- orders.content_hash: `Order.content_hash()` of the stored payload. A storefront version is applied when
--   its hash differs and its `updated_at` is not older (storefronts stamp whole seconds), and the router
--   applies a plan only to the version it planned. NULL for rows written before this version: the hash is
--   then computed from the payload.
-- order_lines.cancelled_quantity: how much of the line the factory cancelled (a cancellation after a
--   partial shipment cancels the unshipped rest). `quantity - cancelled_quantity` is what must ship.
-- factory_orders.claimed: 1 once a delivery of the factory order was ever claimed, so it may have reached
--   the factory. Only a never-claimed factory order may be planned again after a storefront edit. Set by a
--   trigger, so every claim (whoever writes it) counts; rows from before this version count as claimed.
-- factory_cancellations.payload: the `order.cancelled` message's factory order, restricted to the lines it
--   cancels (the unshipped rest, with the quantities left). NULL for rows from before this version: the
--   whole factory order.

ALTER TABLE orders ADD COLUMN content_hash TEXT;

ALTER TABLE order_lines ADD COLUMN cancelled_quantity INTEGER NOT NULL DEFAULT 0;

ALTER TABLE factory_orders ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;

UPDATE factory_orders SET claimed = 1;

CREATE TRIGGER factory_orders_claimed AFTER UPDATE OF lease_owner, lease_expires_at ON factory_orders
WHEN NEW.claimed = 0 AND (NEW.lease_owner IS NOT NULL OR NEW.lease_expires_at IS NOT NULL)
BEGIN
    UPDATE factory_orders SET claimed = 1 WHERE id = NEW.id;
END;

ALTER TABLE factory_cancellations ADD COLUMN payload TEXT;
