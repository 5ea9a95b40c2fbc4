"""Locust user classes, one module per family (key-value, NATS, workload traffic, streams over HTTP)."""
