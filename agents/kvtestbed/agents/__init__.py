"""The agent services: one process per workload agent, measured with HdrHistogram and Prometheus."""
