"""Entry point for `locust -f loadtests/locustfile.py`: the users live in the kvload package (kvload/locustfile.py)."""

from kvload.locustfile import *  # noqa: F403
