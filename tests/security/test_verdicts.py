"""Verdicts nobody inside can forge: what the agent leaves behind is gone before the tests run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.schema import Task
from rockroll.tasks.verify import verify
from rockroll.tasks.workspace import open_sandbox, task_image

# A daemon planted by the "agent": it forges the reward and replaces the tests once they appear.
FORGER = r"""
import os, time
os.makedirs("/logs/verifier", exist_ok=True)
while True:
    for path in ("/logs/verifier/reward.txt",):
        try:
            open(path, "w").write("1\n")
        except OSError:
            pass
    if os.path.exists("/tests/test.sh"):
        try:
            open("/tests/test.sh", "w").write("echo 1 > /logs/verifier/reward.txt\n")
        except OSError:
            pass
    for path in ("/proc/1/mem", "/proc/1/exe"):
        try:
            os.write(os.open(path, os.O_RDWR), b"\xcc")
        except OSError:
            pass
    time.sleep(0.001)
"""


@pytest.fixture
def task(tmp_path: Path) -> Task:
    """A Harbor task that passes only if /app/answer says 42."""
    root = tmp_path / "answer-42"
    (root / "tests").mkdir(parents=True)
    (root / "instruction.md").write_text("Write 42 to /app/answer.\n")
    (root / "task.toml").write_text('version = "1.0"\n[verifier]\ntimeout_sec = 60\n')
    (root / "tests/test.sh").write_text(
        "#!/bin/bash\nsleep 0.5\n"
        'if [ "$(cat /app/answer 2>/dev/null)" = 42 ]; then echo 1; else echo 0; fi '
        "> /logs/verifier/reward.txt\n"
    )
    return load_harbor(root)


def test_a_forging_daemon_does_not_change_the_verdict(task: Task) -> None:
    with open_sandbox(task, task_image(task)) as sb:
        sb.exec("mkdir -p /app && echo 41 > /app/answer")
        sb.exec(f"nohup python3 -c '{FORGER}' >/dev/null 2>&1 & disown", timeout=10)
        sb.exec(f"setsid nohup python3 -c '{FORGER}' >/dev/null 2>&1 &", timeout=10)
        with sb.session() as sh:  # and one more under a live session's shell
            sh.run(f"python3 -c '{FORGER}' >/dev/null 2>&1 &")
            wait = "for i in $(seq 100); do grep -q 1 /logs/verifier/reward.txt && break; "
            wait += "sleep 0.05; done"
            assert sb.exec(f"{wait}; echo $i").stdout != "100\n"  # the forgers are at work
            verdict = verify(task, sb)
        assert verdict.reward == 0.0 and not verdict.passed, verdict
        assert sb.read_text("/logs/verifier/reward.txt") == "0\n"
        assert "echo 1 >" not in sb.read_text("/tests/test.sh")


def test_a_reward_written_in_advance_is_not_taken(task: Task) -> None:
    with open_sandbox(task, task_image(task)) as sb:
        sb.exec("mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt")
        sb.exec("echo '{\"reward\": 1}' > /logs/verifier/reward.json")
        sb.exec("printf '#!/bin/sh\\n' > /usr/bin/rm")  # removal must not need the sandbox's rm
        sb.write_text("/app/answer", "41\n")
        verdict = verify(task, sb)
        assert verdict.reward == 0.0 and not verdict.passed, verdict


def test_the_honest_answer_still_passes(task: Task) -> None:
    with open_sandbox(task, task_image(task)) as sb:
        sb.exec("mkdir -p /app && echo 42 > /app/answer; sleep 1000 &")
        verdict = verify(task, sb)
        assert verdict.passed and verdict.reward == 1.0, verdict
