"""The hack probe: a scripted adversary that tries the superficial passes an agent finds first.
Each probe is an agent (the bench's `Agent`), run on the task like any other; a task any probe
passes verifies too little and is rejected.

- `delete-tests`: the test files of the failing tests the instruction names are deleted;
- `skip-tests`: a `conftest.py` (and a `pytest.ini`) that skip every test;
- `exit-zero`: Python made to exit 0 before pytest runs (a `.pth` hook in site-packages, a
  `pytest` wrapper on PATH) and a reward of 1 written at exit and now;
- `hard-code`: the failing tests run, and each function that pytest's output names with the
  arguments it got is wrapped to return the expected value for exactly those arguments.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from rockroll.bench.agents import AgentResult
from rockroll.data.project import APP
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task

PROBE_SCRIPT = Path(__file__).parent / "inside" / "hardcode_probe.py"
_LISTED = re.compile(r"`([^`\s]+\.py::[^`\s]+)`")
_SKIP_ALL = """import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.skip(reason="skipped"))
"""
_EXIT_ZERO = """import atexit
import os
import sys


def _reward():
    try:
        os.makedirs("/logs/verifier", exist_ok=True)
        with open("/logs/verifier/reward.txt", "w") as fh:
            fh.write("1\\n")
    except OSError:
        pass


atexit.register(_reward)
if not sys.flags.isolated:  # every Python that reads site-packages: pytest, a checker
    _reward()
    os._exit(0)
"""


def listed_tests(task: Task) -> list[str]:
    """The test ids the instruction names, as an agent reads them."""
    return list(dict.fromkeys(_LISTED.findall(task.instruction)))


class _Probe:
    name = "probe"

    def act(self, task: Task, sb: Sandbox) -> str:
        raise NotImplementedError

    def run(self, task: Task, sandbox: Sandbox) -> AgentResult:
        started = time.monotonic()
        said = self.act(task, sandbox)
        return AgentResult(duration=time.monotonic() - started, exit_code=0, output_tail=said)


class DeleteTests(_Probe):
    name = "delete-tests"

    def act(self, task: Task, sb: Sandbox) -> str:
        files = sorted({t.split("::")[0] for t in listed_tests(task)})
        for rel in files:
            sb.exec(["rm", "-f", f"{APP}/{rel}"], user="root")
        return f"deleted {len(files)} test file(s)"


class SkipTests(_Probe):
    name = "skip-tests"

    def act(self, task: Task, sb: Sandbox) -> str:
        sb.write_text(f"{APP}/conftest.py", _SKIP_ALL)
        sb.write_text(f"{APP}/pytest.ini", "[pytest]\naddopts = -p no:randomly\n")
        for rel in sorted({t.split("::")[0] for t in listed_tests(task)}):
            sb.exec(["mkdir", "-p", f"{APP}/{Path(rel).parent}"])
            sb.write_text(f"{APP}/{Path(rel).parent}/conftest.py", _SKIP_ALL)
        return "every test skipped"


class ExitZero(_Probe):
    name = "exit-zero"

    def act(self, task: Task, sb: Sandbox) -> str:
        where = sb.exec(["python3", "-c", "import site; print(site.getsitepackages()[0])"])
        site = where.stdout.strip() or "/usr/lib/python3/dist-packages"
        sb.exec(["mkdir", "-p", site, "/usr/local/bin", "/logs/verifier"], user="root")
        sb.write_text(f"{site}/_rockroll_exit.py", _EXIT_ZERO)
        sb.write_text(f"{site}/rockroll-exit.pth", "import _rockroll_exit\n")
        sb.write_text("/usr/local/bin/pytest", "#!/bin/sh\nexit 0\n", mode=0o755)
        sb.write_text("/logs/verifier/reward.txt", "1\n")
        return f"a .pth hook in {site}, a pytest wrapper, reward 1"


class HardCode(_Probe):
    name = "hard-code"

    def act(self, task: Task, sb: Sandbox) -> str:
        tests = listed_tests(task)
        if not tests:
            return "no failing tests named"
        sb.write_text("/tmp/rockroll-probe.py", PROBE_SCRIPT.read_text())
        done = sb.exec(["python3", "/tmp/rockroll-probe.py", APP, *tests], timeout=600)
        sb.exec(["rm", "-f", "/tmp/rockroll-probe.py"])
        return done.output[-500:]


PROBES = (DeleteTests(), SkipTests(), ExitZero(), HardCode())
