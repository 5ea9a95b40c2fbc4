"""roles/grafana's lookup plugin: Grafana's apt repository comes from the grafana.grafana collection's defaults at run
time, a value it cannot use is refused in one line, and the repository's host is written nowhere in the project."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import pytest
import yaml

from tests.support.binaries import unavailable
from tests.support.plugins import load_plugin

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "roles" / "grafana" / "lookup_plugins" / "grafana_collection_default.py"


def plugin() -> ModuleType:
    return load_plugin(str(PLUGIN.relative_to(ROOT)), "grafana_collection_default")


def installed_defaults() -> Path:
    try:
        return plugin().collection_defaults_file()
    except Exception as exc:  # the plugin's one-line AnsibleLookupError when the collection is missing
        unavailable(f"the grafana.grafana collection is not installed: {exc}")


def test_reads_the_collections_repository_and_key() -> None:
    path = installed_defaults()
    module = plugin()
    raw = yaml.safe_load(path.read_text())
    for name in ("grafana_apt_repo_uri", "grafana_apt_key"):
        value = module.read_default(path, name)
        assert value == raw[name] and urlparse(value).scheme == "https", (name, value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("grafana_apt_repo_uri: '{{ some_var }}/'\n", "has no plain value for grafana_apt_repo_uri"),
        ("other: 1\n", "has no plain value for grafana_apt_repo_uri"),
        ("grafana_apt_repo_uri: [a]\n", "has no plain value for grafana_apt_repo_uri"),
        ("grafana_apt_repo_uri: 'a\n", "cannot read"),
    ],
    ids=["templated", "missing", "not-a-string", "bad-yaml"],
)
def test_a_value_it_cannot_use_is_refused_in_one_line(tmp_path: Path, content: str, expected: str) -> None:
    module = plugin()
    defaults = tmp_path / "main.yml"
    defaults.write_text(content)
    with pytest.raises(Exception) as caught:
        module.read_default(defaults, "grafana_apt_repo_uri")
    message = str(caught.value)
    assert expected in message and "set grafana_apt_repo_uri and grafana_apt_key_url" in message
    assert "\n" not in message


def test_the_repository_host_is_written_nowhere_in_the_project() -> None:
    """The rule the plugin exists for: read the host from the collection, then look for it in every tracked and new
    file of the checkout."""
    raw = yaml.safe_load(installed_defaults().read_text())
    hosts = {urlparse(raw[name]).hostname for name in ("grafana_apt_repo_uri", "grafana_apt_key")}
    assert hosts and None not in hosts
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    offenders = []
    for name in filter(None, listed):
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{name}: {host}" for host in hosts if host and host in text]
    assert offenders == []
