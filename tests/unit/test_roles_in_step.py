"""House rules for every role: argument_specs and defaults in step, a Molecule scenario with testinfra."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/defaults/main.yml"))


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role: Path):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(specs), f"{role.name}: defaults and argument_specs differ"
    for name, spec in specs.items():
        if "default" in spec:
            assert spec["default"] == defaults[name], f"{role.name}: default of {name} differs"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_molecule_with_testinfra(role: Path):
    if role.name == "lab":
        pytest.skip("the lab role is what Molecule runs on; tests/lab covers it end to end")
    scenarios = list(role.glob("molecule/*/molecule.yml"))
    assert scenarios, f"{role.name} has no Molecule scenario"
    for scenario in scenarios:
        config = yaml.safe_load(scenario.read_text())
        assert config["verifier"]["name"] == "testinfra", scenario
        assert "idempotence" in config["scenario"]["test_sequence"], scenario
        assert list(scenario.parent.glob("tests/test_*.py")), f"{scenario.parent} has no testinfra tests"


def test_private_variables_are_prefixed():
    """Role variables start with the role's name (public) or _role (private), as the style guide asks."""
    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
        prefix = role.name.replace("-", "_")
        for name in defaults:
            assert name.startswith(prefix + "_"), f"{role.name}: default {name} lacks the {prefix}_ prefix"
