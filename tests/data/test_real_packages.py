"""The pipeline on real packages nobody here wrote: three sdists from the package index
(fetched when the suite is installed, served here from loopback), the deterministic strategies
alone, k = 5. Each source gives accepted tasks; through `rockroll bench run` (the CLI) every one
passes the oracle and fails the no-op, and the hack probe failed on every one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data.pypi_index import Index
from tests.data.sdists import load


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Path]:
    index = Index()
    for name, (version, data) in load().items():
        index.packages[name] = (version, data, None)
    out = tmp_path_factory.mktemp("real") / "ds"
    env = os.environ | {"ROCKROLL_PYPI_URL": index.url}
    sources = [f"pypi:{name}=={version}" for name, (version, _) in sorted(load().items())]
    try:
        done = _rockroll(
            ["data", "synth", *sources, "--out", str(out), "--limit", "3", "--reruns", "5"], env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        yield out
    finally:
        index.server.shutdown()


def _rockroll(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rockroll", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )


def _manifest(dataset: Path) -> list[dict]:
    return [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]


def test_each_real_package_gives_accepted_tasks_that_the_bench_confirms(dataset: Path) -> None:
    records = _manifest(dataset)
    sources = [r for r in records if r["kind"] == "source"]
    assert [s["status"] for s in sources] == ["ok"] * 3, sources
    accepted = [r for r in records if r.get("accepted")]
    assert {r["source"].split("==")[0] for r in accepted} == {
        "pypi:iniconfig",
        "pypi:six",
        "pypi:toolz",
    }
    for r in accepted:
        assert r["gates"]["controls"]["detail"].startswith("noop passed 0/5, oracle passed 5/5")
        assert r["gates"]["hack-probe"]["ok"] and r["gates"]["hack-probe"]["detail"] == (
            "4 probes failed"
        )
    tasks = dataset / "tasks"
    assert len(list(tasks.iterdir())) == len(accepted)
    for agent, passed in (("oracle", len(accepted)), ("noop", 0)):
        out = dataset.parent / f"bench-{agent}"
        done = _rockroll(["bench", "run", str(tasks), "--agent", agent, "--out", str(out)])
        assert done.returncode == 0, done.stderr
        results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert len(results) == len(accepted)
        assert sum(r["passed"] for r in results) == passed, [
            (r["task"], r["reason"]) for r in results if r["passed"] != bool(passed)
        ]


def test_the_funnel_is_reported_in_the_terminal_and_as_html(dataset: Path) -> None:
    done = _rockroll(["data", "report", str(dataset), "--html", str(dataset / "f.html")])
    assert done.returncode == 0, done.stderr
    accepted = sum(1 for r in _manifest(dataset) if r.get("accepted"))
    assert f"accepted {accepted}" in done.stdout and "candidates" in done.stdout
    page = (dataset / "f.html").read_text()
    assert "<h2>Funnel</h2>" in page and "pypi:toolz==1.2.0" in page
    assert (dataset / "report.html").is_file()  # synth writes one too
