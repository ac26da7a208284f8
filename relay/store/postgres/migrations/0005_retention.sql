-- relay schema, version 5 (PostgreSQL translation of sqlite/migrations/0005_retention.sql): retention.

CREATE INDEX inbound_messages_by_received ON inbound_messages (received_at);
