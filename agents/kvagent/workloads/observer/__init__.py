"""The observer workload."""
