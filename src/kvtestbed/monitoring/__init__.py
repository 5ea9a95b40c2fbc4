"""Monitoring on the controller's side: what a running scenario exposes to Prometheus (runner_metrics)."""
