-- relay schema, version 9: whether a tracking push's earlier attempts are all accounted for (issue 15).
--
-- storefront_pushes.settled_token: the lease_token (the claim counter: every claim adds 1) of the last claim
--   whose outcome was recorded as definite: pushed, or not written at all (throttled before any write, or not
--   sent). A claim whose lease_token is settled_token + 1 follows only definite outcomes: the storefront
--   cannot hold a write relay does not know of, so the adapter writes at once. Any other claim follows an
--   attempt that may have written (a crash after the write, a lost answer, a failure): the adapter looks
--   before writing. Rows from before this version count as unsettled once claimed.

ALTER TABLE storefront_pushes ADD COLUMN settled_token INTEGER NOT NULL DEFAULT 0;
