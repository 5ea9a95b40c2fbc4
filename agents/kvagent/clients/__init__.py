"""Clients of the systems under test: RESP, Sentinel and Cluster resolution, JetStream, key events."""
