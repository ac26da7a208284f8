-- relay schema, version 9 (PostgreSQL translation of sqlite/migrations/0009_push_settled.sql): whether a
-- tracking push's earlier attempts are all accounted for (issue 15). settled_token is the lease_token of the
-- last claim whose outcome was recorded as definite; a claim with lease_token = settled_token + 1 follows only
-- definite outcomes.

ALTER TABLE storefront_pushes ADD COLUMN settled_token BIGINT NOT NULL DEFAULT 0;
