"""The agents' recording rules: promtool accepts and tests them, and they follow the agents' real metrics.

Every LatencyMetric in agents/kvagent gets an observation rate and p50/p99/p99.9 rules keeping its own labels, and
no rule names a metric the agents do not export (read from the agents' source: the names, labels and suffixes
prometheus_client gives them: <name>_seconds_{bucket,count,sum} for a LatencyMetric, <name>_total for a counter).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.binaries import require
from tests.support.metric_names import Family, exported_series, families_in_source

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"
RULES = RULES_DIR / "kvtestbed.rules.yml"
RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))
AGENTS = ROOT / "agents" / "kvagent"
# labels every agent series carries from its scrape target: the rules keep them (agent is 1:1 with instance)
TARGET_LABELS = ["job", "instance", "agent"]
QUANTILES = {"0.5", "0.99", "0.999"}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or (Path("/usr/bin/promtool").exists() and "/usr/bin/promtool") or None
    return require(found, "promtool", "apt-get install prometheus: Debian's package ships promtool")


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules(promtool: str) -> None:
    proc = run([promtool, "check", "rules", str(RULES)], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_tests_the_rules(promtool: str) -> None:
    assert RULE_TESTS, f"no promtool rule tests in {RULES_DIR / 'tests'}"
    proc = run([promtool, "test", "rules", *[p.name for p in RULE_TESTS]], RULES_DIR / "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr


def test_a_wrong_expectation_fails_the_rule_test(promtool: str, tmp_path: Path) -> None:
    """The rule tests can fail: one expected rate off by one is reported."""
    data = yaml.safe_load(RULE_TESTS[0].read_text())
    data["rule_files"] = [str(RULES)]
    samples = [s for t in data["tests"] for e in t["promql_expr_test"] for s in e["exp_samples"]]
    samples[0]["value"] = float(samples[0]["value"]) + 1
    (tmp_path / "wrong.yml").write_text(yaml.safe_dump(data))
    proc = run([promtool, "test", "rules", "wrong.yml"], tmp_path)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# -- the agents' metrics, from their source (tests/support/metric_names.py) ---------------------------------------
def agent_families() -> dict[str, Family]:
    return families_in_source(AGENTS)


def recording_rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _by(expr: str) -> list[str]:
    match = re.search(r"sum by \(([^)]*)\)", expr)
    assert match, f"no 'sum by (...)' in {expr}"
    return [label.strip() for label in match.group(1).split(",")]


def test_every_latency_metric_has_a_rate_and_its_quantiles() -> None:
    histograms = [f for f in agent_families().values() if f.histogram]
    assert len(histograms) >= 10, histograms  # the scan found the agents' LatencyMetrics
    rules = recording_rules()
    for family in histograms:
        level = "_".join(["instance", *family.labels])
        by = [*TARGET_LABELS, *family.labels]
        rate = [r for r in rules if r["record"] == f"{level}:{family.name}_count:rate1m"]
        assert len(rate) == 1, f"no observation rate rule for {family.name}"
        assert _by(rate[0]["expr"]) == by and f"rate({family.name}_count[1m])" in rate[0]["expr"]
        quantiles = [r for r in rules if r["record"] == f"{level}:{family.name}:histogram_quantile"]
        assert {r["labels"]["quantile"] for r in quantiles} == QUANTILES, family.name
        for rule in quantiles:
            assert rule["expr"].startswith(f"histogram_quantile({rule['labels']['quantile']}, "), rule
            assert _by(rule["expr"]) == [*by, "le"] and f"rate({family.name}_bucket[1m])" in rule["expr"], rule


def test_rules_name_only_metrics_the_agents_export() -> None:
    families = agent_families()
    series = exported_series(families.values())
    for rule in recording_rules():
        used = re.findall(r"\b(kvt_[a-z0-9_]+)\[", rule["expr"])
        assert len(used) == 1, rule
        assert used[0] in series, f"{rule['record']}: no agent exports {used[0]}"
        family = series[used[0]]
        own = [label for label in _by(rule["expr"]) if label not in (*TARGET_LABELS, "le")]
        assert set(own) <= set(family.labels), f"{rule['record']}: {family.name} has no label(s) {own}"
        # level:metric:operations, the level naming the labels kept
        level, metric, operation = rule["record"].split(":")
        assert level == "_".join(["instance", *own]), rule["record"]
        assert operation in ("rate1m", "histogram_quantile"), rule["record"]
        expected_metric = {"_bucket": family.name, "_count": family.name + "_count", "_total": family.name}[
            used[0][len(family.name) :]
        ]
        assert metric == expected_metric, rule["record"]
