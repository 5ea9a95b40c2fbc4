"""Command line entry point (filled in by the foundation work)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("kvtestbed: not implemented yet", file=sys.stderr)
    return 2
