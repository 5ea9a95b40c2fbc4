"""Faults on testbed hosts: inject → heal → verify, with a dead-man timer on each host and `heal_all`.

See docs/faults.md.
"""

from kvtestbed.faults.base import Fault, FaultContext, FaultSpec
from kvtestbed.faults.errors import FaultError, FaultSpecError, FaultUnsupported
from kvtestbed.faults.heal import heal_all
from kvtestbed.faults.registry import KINDS, make_context, make_fault, parse_spec

__all__ = ["KINDS", "Fault", "FaultContext", "FaultError", "FaultSpec", "FaultSpecError", "FaultUnsupported",
           "heal_all", "make_context", "make_fault", "parse_spec"]
