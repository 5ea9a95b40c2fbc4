"""A default of the grafana.grafana collection's `grafana` role, read at run time from the installed collection.

`lookup('grafana_collection_default', 'grafana_apt_repo_uri')` returns that variable of the collection's
roles/grafana/defaults/main.yml. The collection ships with the `ansible` package from PyPI, so the address of
Grafana's apt repository (and of its signing key) comes from Grafana's own collection and is written nowhere in
this project; a new collection release that moves the repository moves it here too. Only plain values are read: a
templated one would need the collection role's other variables, and is refused with one line.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

COLLECTION = "grafana.grafana"
DEFAULTS = Path("roles") / "grafana" / "defaults" / "main.yml"
HOW_TO_FIX = "set grafana_apt_repo_uri and grafana_apt_key_url in the inventory"


def collection_defaults_file() -> Path:
    """roles/grafana/defaults/main.yml of the collection as Ansible's collection loader finds it."""
    try:
        package = import_module(f"ansible_collections.{COLLECTION}")
    except ImportError:
        raise AnsibleLookupError(
            f"the {COLLECTION} collection is not installed on the controller (it comes with the `ansible` "
            f"package; or: ansible-galaxy collection install {COLLECTION}), or {HOW_TO_FIX}"
        ) from None
    return Path(list(package.__path__)[0]) / DEFAULTS


def read_default(path: Path, name: str) -> str:
    try:
        defaults = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        # YAML errors span lines (a caret under the spot): their first line is enough here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnsibleLookupError(f"cannot read {path}: {reason}; {HOW_TO_FIX}") from None
    value = defaults.get(name) if isinstance(defaults, dict) else None
    if not isinstance(value, str) or not value or "{{" in value or "{%" in value:
        raise AnsibleLookupError(f"{path} has no plain value for {name}; {HOW_TO_FIX}")
    return value


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        path = collection_defaults_file()
        return [read_default(path, str(term)) for term in terms]
