"""Prometheus exporters the exporters role runs beside a server that has no Prometheus endpoint of its own.

Each module is a script of its own (the standard library and prometheus_client only, no other kvagent module):
roles/exporters copies the file to the host and runs it with Debian's python3 and python3-prometheus-client, so
hosts outside the `agents` group need no wheel. It is in the package so that tests and linters see it.
"""
