"""--set by dotted path (list indices included) and sweeps: values land where the path says, are recorded with
each scenario, and a path that names no field is one line naming it."""

from __future__ import annotations

import pytest
import yaml

from kvtestbed.scenarios import ScenarioError, load_scenario


def test_set_by_path_with_list_indices(valid, write_scenario):
    (scenario,) = load_scenario(write_scenario(valid), [
        "duration=2m", "faults.0.for=20", "writers.1.strategy=redis-py", "writers.0.rate=250.5",
        "agents.0.config.writer.rate=200", "tags=[a, b]", "faults.1.params.signal=TERM",
        "needs.engines.redis=redis", "load.options.keys=1000", "description=",
        "load.rate=constant:rate=50,for=150",
    ])
    assert scenario.duration_s == 120.0
    assert scenario.faults[0].for_s == 20.0
    assert [w.strategy for w in scenario.writers] == ["redis-py", "redis-py"]
    assert scenario.writers[0].rate == 250.5
    assert scenario.agents[0].config == {"writer": {"rate": 200}}
    assert scenario.tags == ("a", "b")
    assert scenario.faults[1].params == {"signal": "TERM"}
    assert scenario.load is not None and scenario.load.options == {"keys": "1000"}
    assert scenario.description == ""
    assert scenario.overrides == {
        "duration": "2m", "faults.0.for": 20, "writers.1.strategy": "redis-py", "writers.0.rate": 250.5,
        "agents.0.config.writer.rate": 200, "tags": ["a", "b"], "faults.1.params.signal": "TERM",
        "needs.engines.redis": "redis", "load.options.keys": 1000, "description": "",
        "load.rate": "constant:rate=50,for=150",
    }
    # scenario.yml of the run holds the values as run
    assert scenario.document["faults"][0]["for"] == 20
    assert yaml.safe_load(scenario.to_yaml())["duration"] == "2m"


def test_set_creates_a_section_the_file_lacks(valid, write_scenario):
    del valid["load"]
    (scenario,) = load_scenario(write_scenario(valid), ["load.users=[KvGetUser]", "load.target=redis://127.0.0.1:1",
                                                        "load.count=3"])
    assert scenario.load is not None and (scenario.load.users, scenario.load.count) == (("KvGetUser",), 3)


def test_set_does_not_touch_the_file(valid, write_scenario):
    path = write_scenario(valid)
    before = path.read_text()
    load_scenario(path, ["faults.0.at=1"])
    assert path.read_text() == before


def test_a_set_value_is_checked_like_the_file(valid, write_scenario):
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, ["faults.0.for=70"])
    assert "faults[0].for: the partition ends at 80 s" in str(caught.value)


@pytest.mark.parametrize(("assignment", "expected"), [
    ("durration=2m", "--set durration: unknown field 'durration': a scenario has name, description, tags, repeats, "
                     "needs, warmup, duration, writers, agents, load, faults, replicas, benchmarks, checks, slo, "
                     "sweep"),
    ("faults.0.fro=20", "--set faults.0.fro: unknown field 'fro': faults[0] has at, for, kind, group, target, "
                        "service, params"),
    ("faults.2.for=20", "--set faults.2.for: faults has 2 entries (indices 0-1), no 2"),
    ("faults.first.for=20", "--set faults.first.for: faults is a list: give an index (faults.0), not 'first'"),
    ("duration.s=2", "--set duration.s: duration is a single value, not a mapping: set it whole"),
    ("slo.0.threshold=2", "--set slo.0.threshold: slo[0] is a single value, not a mapping: set it whole"),
    ("duration", "--set duration: 'duration': write key=value, e.g. duration=2m or faults.0.for=20"),
    ("faults..for=1", "--set faults..for: 'faults..for' has an empty part"),
    ("duration=[1", "--set duration: value '[1': expected ',' or ']', but got '<stream end>'"),
], ids=["top-level typo", "field typo", "index out of range", "not an index", "into a scalar", "into a string entry",
        "no value", "empty part", "bad YAML"])
def test_a_bad_set_is_one_line(valid, write_scenario, assignment, expected):
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, [assignment])
    assert str(caught.value) == f"{path}: {expected}"


def test_sweep_expands_to_every_combination(valid, write_scenario):
    valid["load"]["rate"] = "constant:rate=100,for=200"
    valid["sweep"] = {"writers.0.rate": [100, 200, 400], "faults.0.params": [{"shape": "isolate"},
                                                                             {"shape": "halves"}]}
    scenarios = load_scenario(write_scenario(valid), ["duration=90"])
    assert len(scenarios) == 6
    seen = {(s.writers[0].rate, s.faults[0].params["shape"]) for s in scenarios}
    assert seen == {(r, shape) for r in (100.0, 200.0, 400.0) for shape in ("isolate", "halves")}
    for scenario in scenarios:
        assert scenario.duration_s == 90.0
        assert set(scenario.sweep_values) == {"writers.0.rate", "faults.0.params"}
        assert scenario.overrides == {"duration": 90, **scenario.sweep_values}
        assert scenario.writers[0].rate == scenario.sweep_values["writers.0.rate"]
        assert "sweep" not in scenario.document
    # the first axis varies slowest, in the file's order
    assert [s.sweep_values["writers.0.rate"] for s in scenarios] == [100, 100, 200, 200, 400, 400]


def test_sweep_expands_after_overrides(valid, write_scenario):
    scenarios = load_scenario(write_scenario(valid), ["sweep.writers.0.rate=[10, 20, 30]", "faults.0.at=5"])
    assert [s.writers[0].rate for s in scenarios] == [10.0, 20.0, 30.0]
    assert all(s.faults[0].at_s == 5.0 for s in scenarios)
    assert scenarios[0].overrides == {"sweep.writers.0.rate": [10, 20, 30], "faults.0.at": 5, "writers.0.rate": 10}


def test_set_and_sweep_on_one_path_is_an_error(valid, write_scenario):
    valid["sweep"] = {"duration": [30, 60]}
    path = write_scenario(valid)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, ["duration=45"])
    assert str(caught.value) == (f"{path}: sweep.duration: also given by --set duration: drop one "
                                 "(or --set 'sweep.duration=[...]' to sweep other values)")


def test_the_scenario_as_run_loads_back_to_the_same_scenario(valid, write_scenario):
    valid["load"]["rate"] = "constant:rate=100,for=200"
    valid["sweep"] = {"duration": ["1m", 90]}
    for scenario in load_scenario(write_scenario(valid), ["writers.1.rate=50"]):
        (again,) = load_scenario(write_scenario(scenario.to_yaml(), "as-run.yml"))
        assert (again.duration_s, again.writers, again.faults, again.slo, again.load) == (
            scenario.duration_s, scenario.writers, scenario.faults, scenario.slo, scenario.load)
