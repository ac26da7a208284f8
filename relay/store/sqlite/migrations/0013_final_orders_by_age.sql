-- relay schema, version 13: final orders by age, for the retention pass (issue 15, scale).
--
-- orders_by_state_and_age: the retention pass (`final_orders_to_prune`) looked at every order in a final
--   state, in id order, reading each row, on every pass: at start-up and daily, its cost grew with every
--   order ever stored (1M stored orders, none old enough to prune: the pass read them all while the daemon
--   took its first orders). It now walks only the orders final since before the retention cutoff, oldest
--   first, through this index.

CREATE INDEX orders_by_state_and_age ON orders (state, updated_at, id);
