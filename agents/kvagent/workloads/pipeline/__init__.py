"""The pipeline workload."""
