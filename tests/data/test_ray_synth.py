"""Synthesis with `distributed: ray` on a real local Ray cluster of two nodes: candidates are
decided by workers on both nodes, the driver keeps one manifest and the limit, and what they
accepted passes the oracle and fails the no-op through the bench."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from rockroll.bench.agents import NoopAgent, OracleAgent  # noqa: E402
from rockroll.bench.runner import run_suite  # noqa: E402
from rockroll.data.pipeline import Synth, SynthOptions  # noqa: E402
from rockroll.tasks.suites import load_suite  # noqa: E402
from tests.data.repos import CALC, TESTS, make_repo  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.mark.slow
def test_candidates_are_decided_on_both_nodes_into_one_dataset(
    tmp_path: Path, base_image: str
) -> None:
    calc = make_repo(tmp_path / "calc", {"calc.py": CALC, "tests/test_calc.py": TESTS})
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    cluster.add_node(**NODE)
    try:
        cluster.wait_for_nodes()
        options = SynthOptions(
            strategies=("bug-injection",),
            limit=2,
            jobs=1,
            reruns=2,
            baseline_runs=8,
            distributed="ray",
            ray_address=cluster.address,
            ray_workers=2,
        )
        records: list[dict] = []
        summary = Synth(tmp_path / "ds", options, on_candidate=records.append).run([str(calc)])
    finally:
        ray.shutdown()
        cluster.shutdown()
    accepted = [r for r in records if r["accepted"]]
    assert len(accepted) >= 2, Counter(r["reason"] for r in records)
    nodes = {r["worker"].split("/")[0] for r in records}
    assert len(nodes) == 2, Counter(r["worker"] for r in records)
    lines = (tmp_path / "ds" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines if '"candidate"' in x] == records
    signatures = [tuple(r["signature"]) for r in accepted]
    assert len(set(signatures)) == len(signatures)
    assert sorted(summary["accepted"]) == sorted(r["task"] for r in accepted)
    items = load_suite(str(tmp_path / "ds" / "tasks"))
    assert all(r.passed for r in run_suite(items, OracleAgent(), tmp_path / "oracle", jobs=2))
    assert not any(r.passed for r in run_suite(items, NoopAgent(), tmp_path / "noop", jobs=2))
