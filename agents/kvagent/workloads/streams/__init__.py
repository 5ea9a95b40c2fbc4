"""The streams workload."""
