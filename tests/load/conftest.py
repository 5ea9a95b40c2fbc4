"""tests/load imports Locust (and so gevent's monkey patching) into the test process: these tests run in a
pytest process of their own (`make test` runs `pytest tests/load` apart), never beside tests/unit, whose asyncio and
subprocess tests a patched process would change."""
