"""kvagent: the workload agents that run on testbed hosts (one process per agent).

Layout: ``service/`` is the machinery every agent shares (config, service shell, HTTP, metrics, breaker,
pacing and deadline timers, clock), ``clients/`` talks to the systems under test (connections with redis-py's
backoff, RESP, Sentinel and Cluster resolution, JetStream, key events), and ``workloads/<kind>/`` holds one
workload with its private helpers. Nothing here imports the controller package (``kvtestbed``); a test enforces it.
"""

# the one copy of the version: the wheel's metadata and roles/agents both read it from here
__version__ = "0.2.0"
