-- relay schema, version 3 (PostgreSQL translation of sqlite/migrations/0003_fencing.sql): fencing tokens
-- (ADR 11). Each claim adds 1 to the row's lease_token and hands the new value out with the job; an outcome
-- is recorded only while the row still carries that token.

ALTER TABLE orders ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;

ALTER TABLE factory_orders ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;

ALTER TABLE factory_cancellations ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;

ALTER TABLE storefront_pushes ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
