"""kvtestbed's locustfile: every user class, the common options, HdrHistogram statistics and rate profiles.

    locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379 KvGetSetUser
    locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379 --headless -u 50 -t 30s \\
        --kvt-rate constant:rate=5000,for=30 --kvt-hdr-out hdr.json KvGetSetUser

Pick the user class by name (`locust -f loadtests/locustfile.py --list`); --host is the target URL the class
understands (docs/load.md).
"""

from kvload import plugin, webauth, webui  # noqa: F401  (options, checks, /hdr, login, the workload tab)
from kvload.users.kv import *  # noqa: F403
from kvload.users.nats import *  # noqa: F403
from kvload.users.streams_http import StreamsRequestUser  # noqa: F401
from kvload.users.workloads import *  # noqa: F403
