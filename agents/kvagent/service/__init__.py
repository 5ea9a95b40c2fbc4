"""What every agent shares: config, the service shell, HTTP, metrics, backoff, breaker, pacing, timers, clock."""
