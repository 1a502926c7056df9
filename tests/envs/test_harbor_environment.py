"""`harbor run`, the real Harbor CLI (in its own Python 3.12 venv, made by `make test`), running
a local task offline with its trials in rockroll sandboxes: the oracle passes, nop fails, and
what the task's commands saw is the sandbox's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.taskdirs import harbor

ROOT = Path(__file__).resolve().parents[2]
HARBOR = ROOT / ".venv-harbor" / "bin" / "harbor"
PROVIDER = "rockroll.envs.harbor_environment:RockrollEnvironment"
SOLVE = "mkdir -p /app && { echo yes; hostname; id -u; } > /app/done\n"
TEST = (
    "cp /app/done /logs/verifier/done.txt 2>/dev/null\n"
    "if grep -q yes /app/done 2>/dev/null; then echo 1 > /logs/verifier/reward.txt\n"
    "else echo 0 > /logs/verifier/reward.txt; fi\n"
)


def harbor_run(task: Path, agent: str, jobs: Path) -> dict:
    """Run `harbor run` on one task; the trial's result, checked to be a single trial."""
    if not HARBOR.exists():
        pytest.fail(f"{HARBOR} is missing: `make test` installs Harbor into .venv-harbor")
    env = os.environ | {"HARBOR_TELEMETRY": "off", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    res = subprocess.run(
        [str(HARBOR), "run", "-p", str(task), "-a", agent, "-e", PROVIDER, "-o", str(jobs)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=jobs.parent,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (trial,) = [p for p in jobs.glob("*/*/result.json")]
    return json.loads(trial.read_text()) | {"dir": str(trial.parent)}


def test_harbor_runs_a_task_in_rockroll_sandboxes(base_image: str, tmp_path: Path) -> None:
    task = harbor(
        tmp_path / "tasks",
        "hello",
        solve=SOLVE,
        test=TEST,
        dockerfile="FROM python:3.11-slim\nWORKDIR /app\n",
        toml="[agent]\ntimeout_sec = 120\n[verifier]\ntimeout_sec = 120\n",
    )
    passed = harbor_run(task, "oracle", tmp_path / "oracle-jobs")
    assert passed["verifier_result"]["rewards"] == {"reward": 1.0}, passed
    assert passed.get("exception_info") is None, passed
    seen = (Path(passed["dir"]) / "verifier" / "done.txt").read_text().split()
    assert seen == ["yes", "sandbox", "0"]  # written inside the sandbox (its hostname), as root
    assert socket.gethostname() != "sandbox"
    failed = harbor_run(task, "nop", tmp_path / "nop-jobs")
    assert failed["verifier_result"]["rewards"] == {"reward": 0.0}, failed
