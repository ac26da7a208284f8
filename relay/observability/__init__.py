"""Observability: Prometheus metrics (`metrics`), order state-change logs (`logs`), the status page."""
