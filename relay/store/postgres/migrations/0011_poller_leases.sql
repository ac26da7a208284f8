-- relay schema, version 11 (PostgreSQL translation of sqlite/migrations/0011_poller_leases.sql): poller
-- leases, one poller per storefront and per polled factory across every daemon (issue 16, ADR 14).

CREATE TABLE poller_leases (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL
);
