"""Read a scenario file strictly: a syntax error names its line, a key given twice is an error (PyYAML would keep
the last one silently, and a scenario must never run something other than what its file seems to say)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kvtestbed.scenarios.errors import ScenarioError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = exc.problem or exc.context or "not valid YAML"
        raise ScenarioError(source, where, problem) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(source, "YAML", str(exc)) from None


def read_mapping(path: Path, source: str) -> dict[str, Any]:
    """The file's top-level mapping; ScenarioError when it cannot be read or is not a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, "", "no such scenario file (scenarios/README.md lists the shipped ones)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(source, "", f"cannot read: {exc}") from None
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ScenarioError(source, "", f"the file is {kind}; a scenario is a mapping with name, duration, ...")
    return data
