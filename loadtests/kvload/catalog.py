"""The user classes kvload offers, for callers that must not import Locust themselves (it monkey-patches the
process with gevent): `python -m kvload.catalog` prints {name: first docstring line} as JSON."""

from __future__ import annotations

import inspect
import json
import sys


def user_classes() -> dict[str, str]:
    from locust import User

    from kvload import locustfile

    found: dict[str, str] = {}
    for name, obj in vars(locustfile).items():
        if inspect.isclass(obj) and issubclass(obj, User) and not getattr(obj, "abstract", False):
            doc = (inspect.getdoc(obj) or "").strip().splitlines()
            found[name] = doc[0] if doc else ""
    return dict(sorted(found.items()))


if __name__ == "__main__":
    json.dump(user_classes(), sys.stdout)
    sys.stdout.write("\n")
