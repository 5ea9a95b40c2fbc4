"""Scenarios: declarative runs (scenarios/*.yml) with writers, agents, Locust load, faults, checks and SLOs.

spec.load_scenario reads and checks a file alone (stage 1); inventory_check.check_against checks it against an
inventory (stage 2). Both raise ScenarioError with one line naming the file, the field and what to fix.
"""

from kvtestbed.scenarios.errors import ScenarioError
from kvtestbed.scenarios.fault_entries import Fault
from kvtestbed.scenarios.inventory_check import check_against
from kvtestbed.scenarios.slo import Slo
from kvtestbed.scenarios.spec import Agent, Load, Needs, Scenario, Writer, load_scenario

__all__ = ["Agent", "Fault", "Load", "Needs", "Scenario", "ScenarioError", "Slo", "Writer", "check_against",
           "load_scenario"]
