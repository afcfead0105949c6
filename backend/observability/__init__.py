"""Operator-facing observability: Prometheus metrics (`metrics`), the `/metrics` route, and a
metering wrapper around the agent's model."""
