"""The hotkeys workload."""
