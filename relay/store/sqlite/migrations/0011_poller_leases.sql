-- relay schema, version 11: poller leases (issue 16, ADR 14).
--
-- One poller per storefront (`storefront:<name>`) and per polled factory (`factory:<name>`) across every
-- daemon on the database. A lease is held by `owner` (a process incarnation, as the outbox leases) until
-- `expires_at` (relay's clock); `token` grows by 1 each time a new owner takes it, and the poller's writes
-- (ingest, cursors, notices) are fenced by it: a write under an older token changes nothing.
-- `owner` NULL: released (free). `acquired_at`: when the current owner took it.

CREATE TABLE poller_leases (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    acquired_at REAL NOT NULL
);
