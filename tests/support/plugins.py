"""Ansible plugins of the project (filter, lookup, callback) loaded as Ansible finds them: by file path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_plugin(relative: str, name: str) -> ModuleType:
    """The module at ROOT/relative (e.g. roles/kvstore/filter_plugins/kvstore_notify.py), imported as `name`."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None, relative
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
