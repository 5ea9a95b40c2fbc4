"""The one error every scenario check raises: one line naming the file, the field and what to fix."""

from __future__ import annotations


def field_path(parts: tuple[str | int, ...]) -> str:
    """('faults', 1, 'kind') -> 'faults[1].kind': the spelling every message uses for a field."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


class ScenarioError(ValueError):
    """A scenario that cannot run. str() is one line: `<file>: <field>: <problem>`."""

    def __init__(self, source: str, field: str, problem: str):
        self.source = source
        self.field = field
        self.problem = problem
        # one line whatever the inputs: a YAML excerpt or a value may carry newlines
        text = f"{source}: {field}: {problem}" if field else f"{source}: {problem}"
        super().__init__(" ".join(text.split()))


class FieldError(ValueError):
    """Raised inside the parsers, which know the field but not the file; load_scenario adds the file."""

    def __init__(self, path: tuple[str | int, ...], problem: str):
        super().__init__(problem)
        self.path = path
        self.problem = problem

    def at(self, source: str, context: str = "") -> ScenarioError:
        where = f"{source} ({context})" if context else source
        return ScenarioError(where, field_path(self.path), self.problem)
