-- relay schema, version 3: fencing tokens (issue 11, item 2; ADR 11).
--
-- lease_token on every table whose rows are claimed under a lease: each claim adds 1 (so a row's token only
-- grows) and hands the new value out with the job. An outcome is recorded only while the row still carries
-- the token its job was claimed with; a claim by anyone since (after the lease lapsed) makes the older
-- outcome stale, and a stale outcome changes nothing. 0 for rows never claimed.

ALTER TABLE orders ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;

ALTER TABLE factory_orders ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;

ALTER TABLE factory_cancellations ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;

ALTER TABLE storefront_pushes ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
