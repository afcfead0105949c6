"""Reliability: per-user rate limits and idempotent retries, shared across replicas."""
