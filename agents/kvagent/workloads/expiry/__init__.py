"""The expiry workload."""
