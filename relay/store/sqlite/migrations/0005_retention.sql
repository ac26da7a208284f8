-- relay schema, version 5: retention (issue 11, item 12; `relay prune` and the daemon's daily pass).
--
-- inbound_messages_by_received: finds the message ids older than `retention.inbound_message_days` without
--   scanning the table (it is keyed by (factory, message_id)). Events and shipments are found through
--   their existing per-order indexes, orders through orders_by_state.

CREATE INDEX inbound_messages_by_received ON inbound_messages (received_at);
