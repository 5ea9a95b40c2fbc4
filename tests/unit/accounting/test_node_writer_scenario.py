"""Writers pinned to one node and writers sharing keys in a scenario file: the fields (`strategy: node`, `host`,
`keys`), the `conflicts` check, its SLO figures, the inventory check of the host, the wiring to the inventory's
nodes and secrets, and where the figures show (end-of-run table, report). Nothing here talks to a server: the
writer and the check against a real KeyDB mesh are in tests/integration/accounting/test_accounting_mesh.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtestbed.accounting import NodeSet, NodeTarget, Peer
from kvtestbed.accounting.strategies import AccountingError
from kvtestbed.inventory import Inventory
from kvtestbed.report import write_report
from kvtestbed.scenarios import ScenarioError, check_against, load_scenario
from kvtestbed.scenarios.runner import summary_table
from kvtestbed.scenarios.wiring import WiringError, node_set, node_target
from tests.support.run_folders import make_run

MESH: dict[str, Any] = {
    "name": "keydb-partition",
    "needs": {"groups": ["keydb"], "engines": {"keydb": "keydb"}, "topologies": {"keydb": "mesh"}},
    "warmup": 5,
    "duration": 30,
    "writers": [
        {"name": "a", "group": "keydb", "strategy": "node", "host": "pi-1", "rate": 100, "key_prefix": "kvt:m:",
         "keys": 200},
        {"name": "b", "group": "keydb", "strategy": "node", "host": "pi-3", "rate": 100, "key_prefix": "kvt:m:",
         "keys": 200},
    ],
    "faults": [{"at": 10, "for": 20, "kind": "partition", "group": "keydb", "target": "pi-3",
                "params": {"shape": "isolate"}}],
    "checks": ["lost-writes", "conflicts"],
    "slo": ["accounting.conflicts.diverged == 0", "accounting.conflicts.won.b >= 0"],
}  # fmt: skip

# the lab inventory's groups in check_against's shape (tests/unit/scenarios/conftest.py keeps the full one)
GROUPS = {"keydb": ["pi-1", "pi-2", "pi-3"], "redis": ["pi-1", "pi-2", "pi-3"], "sentinel": ["pi-1", "pi-2", "pi-3"],
          "pcs": ["pc-1", "pc-2"]}  # fmt: skip
GROUP_VARS = {
    "keydb": {"keydb_kvstore": {"engine": "keydb", "topology": "mesh", "ports": [6381]}},
    "redis": {"redis_kvstore": {"engine": "redis", "topology": "replication", "ports": [6379], "primary": "pi-1"}},
    "sentinel": {"sentinel_monitors": [{"name": "redis", "group": "redis", "port": 6379}]},
}


def load(tmp_path: Path, document: dict[str, Any], *overrides: str):
    path = tmp_path / "t.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_scenario(path, list(overrides)), path


def refusal(tmp_path: Path, document: dict[str, Any], *overrides: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        load(tmp_path, document, *overrides)
    line = str(caught.value)
    assert "\n" not in line
    return line.split(": ", 1)[1]  # without the file name


def test_a_mesh_scenario_with_two_node_writers_sharing_keys_loads(tmp_path: Path) -> None:
    (scenario,), _ = load(tmp_path, MESH)
    a, b = scenario.writers
    assert (a.strategy, a.host, a.keys, b.host) == ("node", "pi-1", 200, "pi-3")
    assert a.shares_keys_with(b) and scenario.key_sharing() == (("keydb", "kvt:m:", ("a", "b")),)
    check_against(scenario, GROUPS, GROUP_VARS)


CASES = [
    ("node without host", ["writers.0.host=null"],
     "writers[0].host: required with strategy node: the host of the group it writes to"),
    ("host with another strategy", ["writers.0.strategy=redis-py"],
     "writers[0].host: only for strategy node (a redis-py writer finds its node itself)"),
    ("keys on a jetstream writer", ["writers.1.host=null", "writers.1.strategy=jetstream"],
     "writers[1].keys: a jetstream writer publishes messages of its own: it has no keys to share"),
    ("keys zero", ["writers.0.keys=0"], "writers[0].keys: 0 is out of range: must be between 1 and 10000000"),
    ("same prefix, other keys", ["writers.1.keys=100"],
     "writers[1].keys: 100 keys, and a writes 200 with the same group and key_prefix: give both the same keys"),
    ("conflicts without shared keys", ["writers.1.key_prefix='kvt:other:'"],
     "checks[1]: conflicts compares writes of shared keys: give two writers of one group the same key_prefix and "
     "keys (e.g. keys: 100)"),
    ("conflicts with one writer keyed", ["writers.1.keys=null"],
     "checks[1]: conflicts compares writes of shared keys: give two writers of one group the same key_prefix and "
     "keys (e.g. keys: 100)"),
    ("conflicts on two groups", ["writers.1.group=redis"],
     "checks[1]: conflicts compares writes of shared keys: give two writers of one group the same key_prefix and "
     "keys (e.g. keys: 100)"),
    ("conflicts of cluster writers", ["writers.0.host=null", "writers.1.host=null", "writers.0.strategy=cluster",
                                      "writers.1.strategy=cluster"],
     "checks[1]: conflicts reads the shared keys on every node: not for a cluster writer (a)"),
    ("conflict figure without the check", ["checks=[lost-writes]"],
     "slo[0]: figure 'accounting.conflicts.diverged': add 'conflicts' to checks"),
    ("unknown conflict figure", ["slo.0=accounting.conflicts.divergent == 0"],
     "slo[0]: unknown figure 'accounting.conflicts.divergent': the conflicts check gives keys, diverged, newest_won, "
     "concurrent_won, older_won, lost, unknown_final, unexpected_final, lost_gap_s, won.<writer>, lost_of.<writer>"),
    ("won of no writer", ["slo.1=accounting.conflicts.won.c >= 1"],
     "slo[1]: unknown figure 'accounting.conflicts.won.c': the conflicts check gives keys, diverged, newest_won, "
     "concurrent_won, older_won, lost, unknown_final, unexpected_final, lost_gap_s, won.<writer>, lost_of.<writer>"),
    ("agents figure with the conflicts check only", ["slo.0=accounting.expiry.lost == 0"],
     "slo[0]: figure 'accounting.expiry.lost': add 'agents' to checks (the agents' own accounting)"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "expected"), [(o, e) for _, o, e in CASES], ids=[c[0] for c in CASES])
def test_bad_writer_entries_and_checks_are_one_line(tmp_path: Path, overrides: list[str], expected: str) -> None:
    assert refusal(tmp_path, MESH, *overrides) == expected


def test_a_host_outside_the_group_and_a_node_writer_on_nats_are_refused_by_the_inventory(tmp_path: Path) -> None:
    (scenario,), _ = load(tmp_path, MESH, "writers.1.host=pc-1")
    with pytest.raises(ScenarioError, match=r"writers\[1\]\.host: host 'pc-1' is not in group 'keydb' "
                                            r"\(pi-1, pi-2, pi-3\)$"):  # fmt: skip
        check_against(scenario, GROUPS, GROUP_VARS)
    (scenario,), _ = load(tmp_path, MESH, "writers.1.host=pi-9")
    with pytest.raises(ScenarioError, match=r"host 'pi-9' is not in group 'keydb'"):
        check_against(scenario, GROUPS, GROUP_VARS)
    # a replica of a replication set is a valid node (its writes fail READONLY: what the run shows)
    (scenario,), _ = load(
        tmp_path,
        MESH,
        "writers.0.group=redis",
        "writers.1.group=redis",
        "writers.1.host=pi-2",
        "faults.0.group=redis",
        "needs.groups=[redis]",
        "needs.engines={}",
        "needs.topologies={}",
    )
    check_against(scenario, GROUPS, GROUP_VARS)


def test_a_writer_without_keys_keeps_a_key_per_op(tmp_path: Path) -> None:
    document = copy.deepcopy(MESH)
    for writer in document["writers"]:
        del writer["keys"]
    document["checks"], document["slo"] = ["lost-writes"], []
    (scenario,), _ = load(tmp_path, document)
    assert [w.keys for w in scenario.writers] == [None, None] and scenario.key_sharing() == ()


def mesh_inventory(topology: str = "mesh") -> Inventory:
    kvstore = {"engine": "keydb", "topology": topology, "ports": [6381, 6382]}
    hostvars = {name: {"ansible_host": f"10.9.0.{n}", "keydb_kvstore": kvstore}
                for n, name in enumerate(("pi-1", "pi-2", "pi-3"), start=11)}  # fmt: skip
    listing = {"_meta": {"hostvars": hostvars}, "all": {"children": ["keydb"]}, "keydb": {"hosts": list(hostvars)}}
    return Inventory.from_listing("test", listing)


def test_the_nodes_of_a_group_are_its_hosts_on_the_first_port_with_the_data_users_secret(tmp_path: Path) -> None:
    (tmp_path / "keydb-agent").write_text("s3cret\n")
    nodes = node_set(mesh_inventory(), "keydb", tmp_path)
    assert nodes.peers == (Peer("pi-1", "10.9.0.11", 6381), Peer("pi-2", "10.9.0.12", 6381),
                           Peer("pi-3", "10.9.0.13", 6381))  # fmt: skip
    assert (nodes.username, nodes.password_file, nodes.converges) == ("agent", tmp_path / "keydb-agent", True)
    target = node_target(mesh_inventory(), "keydb", "pi-3", tmp_path)
    assert target.describe() == "node:pi-3@10.9.0.13:6381"
    assert not node_set(mesh_inventory("standalone"), "keydb", tmp_path).converges  # independent servers: read once
    with pytest.raises(WiringError, match=r"host 'pc-1' is not in group 'keydb' \(pi-1, pi-2, pi-3\)"):
        node_target(mesh_inventory(), "keydb", "pc-1", tmp_path)
    with pytest.raises(WiringError, match="keeps a key on one shard"):
        node_set(mesh_inventory("cluster"), "keydb", tmp_path)
    (tmp_path / "keydb-agent").unlink()
    with pytest.raises(WiringError, match=r"keydb-agent is missing \(run kvtestbed deploy"):
        node_set(mesh_inventory(), "keydb", tmp_path)
    with pytest.raises(AccountingError, match="not a node of group 'g'"):
        NodeTarget(NodeSet("g", (Peer("x", "127.0.0.1", 1),)), "y")


CONFLICTS = {
    "keys": 200, "diverged": 0, "newest_won": 180, "concurrent_won": 2, "older_won": 15, "lost": 21,
    "unknown_final": 5, "unexpected_final": 0, "lost_gap_s": 0.004, "won": {"a": 120, "b": 80},
    "lost_of": {"a": 4, "b": 17},
    "older_won_sample": ["kvt:m:7"], "diverged_sample": [],
    "sets": [{"group": "keydb", "key_prefix": "kvt:m:", "writers": ["a", "b"], "nodes": ["pi-1", "pi-2", "pi-3"],
              "converged": True, "settle_s": 0.41}],
}  # fmt: skip


def test_the_conflicts_show_at_the_end_of_the_run_and_in_the_report(tmp_path: Path) -> None:
    summary = {"run": {"scenario": "keydb-partition", "status": "passed", "error": None}, "clients": {}, "slo": [],
               "accounting": {"conflicts": CONFLICTS}}  # fmt: skip
    assert summary_table(summary).splitlines()[1] == (
        "  conflicts: 200 shared keys, 0 diverged, newest won 180, older won 15 (21 newer writes lost), unknown final 5"
    )
    run = make_run(tmp_path, extra={"accounting": {"conflicts": CONFLICTS}},
                   slos=[{"figure": "accounting.conflicts.lost", "op": "==", "threshold": 0}])  # fmt: skip
    page = write_report(run.path).read_text()
    assert ">Conflicting writes</h2>" in page
    assert "accounting.conflicts.older_won" in page and "kvt:m:7" in page
    assert "a, b on keydb (kvt:m:*), read on pi-1, pi-2, pi-3: converged after 0.41 s" in page
    # figures an SLO reads, and the agents' table does not take the conflicts for a workload
    summary_json = run.summary()
    assert summary_json["figures"]["accounting.conflicts.won.b"] == 80
    assert summary_json["slo"][0]["value"] == 21 and not summary_json["slo"][0]["ok"]
    assert "workload (summary.json accounting.*)" not in page
