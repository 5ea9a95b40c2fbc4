"""The faults' errors: one line each, naming the host or the spec field to fix."""

from __future__ import annotations


class FaultError(Exception):
    """A fault could not be injected, healed or verified, or its spec is wrong."""


class FaultSpecError(FaultError):
    """The fault entry itself is wrong (bad input: exit 2)."""


class FaultUnsupported(FaultError):
    """The fault cannot be made here (a kernel without sch_netem, a clock shared with the controller)."""
