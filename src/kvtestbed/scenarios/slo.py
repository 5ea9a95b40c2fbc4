"""SLO thresholds on the run's figures (summary.json "figures"): `"<figure> <op> <number>"` or
`{figure, op, threshold}`. A figure must be one the run produces, so a typo fails before the run, not after it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvtestbed.scenarios import schema
from kvtestbed.scenarios.errors import FieldError
from kvtestbed.scenarios.values import FieldPath, check_keys, choice, number, sequence, text

_SLO_TEXT = re.compile(r"^\s*(\S+)\s*(<=|>=|==|<|>)\s*(\S+)\s*$")
_LOAD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_COMPARE = {
    "<=": lambda v, t: v <= t,
    ">=": lambda v, t: v >= t,
    "==": lambda v, t: v == t,
    "<": lambda v, t: v < t,
    ">": lambda v, t: v > t,
}


@dataclass(frozen=True)
class Slo:
    figure: str  # e.g. clients.*.lost, clients.quorum.failover_s, load.rps
    op: str  # one of schema.SLO_OPS
    threshold: float

    def __str__(self) -> str:
        return f"{self.figure} {self.op} {self.threshold:g}"

    def holds(self, value: float | None) -> bool:
        """A figure the run did not produce (None, NaN) never satisfies an SLO."""
        return value is not None and not math.isnan(value) and _COMPARE[self.op](value, self.threshold)

    def evaluate(self, figures: Mapping[str, float | None]) -> list[dict[str, Any]]:
        """summary.json "slo" entries: one per concrete figure (clients.* expands to every client present)."""
        names = [self.figure]
        if self.figure.startswith("clients.*."):
            field = self.figure.removeprefix("clients.*.")
            names = [k for k in figures if k.startswith("clients.") and k.split(".", 2)[2:] == [field]]
        if not names:
            names = [self.figure]
        return [{"figure": name, "op": self.op, "threshold": self.threshold, "value": figures.get(name),
                 "ok": self.holds(figures.get(name))} for name in names]


def parse_slos(raw: Any, writer_names: tuple[str, ...], sections: Mapping[str, str | None] | None = None
               ) -> tuple[Slo, ...]:
    """`sections`: the figure sections beyond clients/load/run this scenario may or may not produce (accounting,
    benchmarks), each None when it does, or the one line saying what the scenario lacks for it."""
    return tuple(parse_slo(entry, ("slo", i), writer_names, sections)
                 for i, entry in enumerate(sequence(raw, ("slo",))))  # fmt: skip


def parse_slo(raw: Any, path: FieldPath, writer_names: tuple[str, ...],
              sections: Mapping[str, str | None] | None = None) -> Slo:
    if isinstance(raw, str):
        found = _SLO_TEXT.match(raw)
        if not found:
            raise FieldError(path, f"{raw!r}: write '<figure> <op> <number>', e.g. 'clients.*.lost == 0' "
                                   f"(ops: {', '.join(schema.SLO_OPS)})")
        figure, op, threshold_text = found.groups()
        try:
            threshold = number(float(threshold_text), path)
        except ValueError:
            raise FieldError(path, f"threshold {threshold_text!r} is not a number") from None
    elif isinstance(raw, dict):
        check_keys(raw, schema.SLO_FIELDS, path)
        figure = text(raw.get("figure"), (*path, "figure"))
        op = choice(raw.get("op"), (*path, "op"), schema.SLO_OPS, "operator")
        if raw.get("threshold") is None:
            raise FieldError((*path, "threshold"), "required: the number the figure is compared with")
        threshold = number(raw["threshold"], (*path, "threshold"))
    else:
        raise FieldError(path, "give '<figure> <op> <number>' or {figure, op, threshold}")
    check_figure(figure, path, writer_names, sections)
    return Slo(figure, op, threshold)


def check_figure(figure: str, path: FieldPath, writer_names: tuple[str, ...],
                 sections: Mapping[str, str | None] | None = None) -> None:
    if figure in schema.RUN_FIGURES:
        return
    section, _, rest = figure.partition(".")
    if section in schema.FIGURE_SECTIONS:
        lacking = (sections or {}).get(section, f"the scenario has no {section}")
        if lacking is not None:
            raise FieldError(path, f"figure {figure!r}: {lacking}")
        if not _LOAD_NAME.match(rest):
            raise FieldError(path, f"figure {figure!r}: name a figure after '{section}.'")
        return
    if figure.startswith("load."):
        if _LOAD_NAME.match(figure.removeprefix("load.")):
            return
        raise FieldError(path, f"figure {figure!r}: name a load figure after 'load.'")
    if figure.startswith("clients."):
        client, _, field = figure.removeprefix("clients.").partition(".")
        if client != "*" and client not in writer_names:
            clients = ", ".join(writer_names) if writer_names else "none: the scenario has no writers"
            raise FieldError(path, f"unknown figure {figure!r}: no client {client!r} (clients: {clients}; or *)")
        if field not in schema.CLIENT_FIGURES:
            raise FieldError(path, f"unknown figure {figure!r}: no client field {field!r} "
                                   f"({', '.join(schema.CLIENT_FIGURES)})")
        if not writer_names:
            raise FieldError(path, f"figure {figure!r}: the scenario has no writers to measure it")
        return
    raise FieldError(path, f"unknown figure {figure!r} (clients.<writer|*>.<field>, load.<name>, "
                           f"{', '.join(f'{name}.<name>' for name in schema.FIGURE_SECTIONS)}, "
                           f"{', '.join(schema.RUN_FIGURES)})")
