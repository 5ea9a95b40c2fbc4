"""One subpackage per workload; each exposes ``CONFIG_MODEL`` and ``build(config)`` from its ``agent`` module."""
