"""Run a task's verifier after the agent has finished and turn its verdict into a reward."""

from __future__ import annotations

import importlib
import json
import re
import time
from pathlib import Path

from pydantic import BaseModel, Field

from rockroll.errors import SandboxError
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.offline import Probe, make_offline
from rockroll.tasks.schema import Task
from rockroll.tasks.workspace import put_files

TESTS = "/tests"
_FAILED = re.compile(r"^(FAILED|ERROR)\b|\s(FAILED|ERROR)(\s|$)", re.MULTILINE)
# `[SETUP && ]bash SCRIPT`: the script a verifier command runs, after optional set-up steps.
_SCRIPT_COMMAND = re.compile(r"^(?P<head>(?:.*&&\s*)?)(?P<shell>bash|sh)\s+(?P<path>[^\s;&|]+)\s*$")


class VerifyResult(BaseModel):
    """The verdict. `offline` lists the bootstrap steps that were rewritten to run offline."""

    reward: float
    passed: bool
    reason: str | None = Field(None, description="why it did not pass, when it did not")
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    output_tail: str = ""
    offline: list[str] = Field(default_factory=list)


def verify(task: Task, sb: Sandbox) -> VerifyResult:
    """Copy the tests in (only now, as the formats require), run them, read the reward.

    Nothing the agent left behind can touch the verdict: first every process of the sandbox is
    killed (a daemon that would rewrite the tests or the reward file once they appear, say; the
    command channel lives outside the sandbox, where no process of it can reach), then any
    reward file the agent wrote in advance is removed, and so is `/tests` where the tests go
    there (it is absent while the agent works, so whatever is in it the agent put there: a
    `conftest.py` that passes every test, say); only then are the tests copied in.
    """
    started = time.monotonic()
    v = task.verifier
    left = sb.kill_all()
    if left:
        raise SandboxError(
            f"{left} process(es) of the agent could not be killed before the tests ran "
            "(stuck in the kernel); the verdict would not be trustworthy"
        )
    for path in [*v.reward_files, *_test_roots(v.files)]:
        sb.remove(path)  # by the host: the agent may have replaced `rm`
    put_files(sb, v.files)
    if v.kind == "python":
        module, _, name = (v.function or "").partition(":")
        reward, detail = getattr(importlib.import_module(module), name)(sb, v.args)
        return VerifyResult(
            reward=float(reward),
            passed=reward >= 1.0,
            reason=None if reward >= 1.0 else "wrong-answer",
            duration=time.monotonic() - started,
            output_tail=detail[-2000:],
        )
    command, offline = _offline_command(task, sb)
    res = sb.exec(
        ["bash", "-c", command],
        timeout=v.timeout,
        env=v.env,
        cwd=v.workdir,
    )
    tail = res.output[-4000:]
    result = VerifyResult(
        reward=0.0,
        passed=False,
        exit_code=res.exit_code,
        timed_out=res.timed_out,
        duration=time.monotonic() - started,
        output_tail=tail,
        offline=[str(r) for r in offline],
    )
    if res.timed_out:
        result.reason = "verifier-timeout"
        return result
    reward = _reward_file(sb, v.reward_files)
    if reward is None:
        reward = 1.0 if _passed(v.parser, res.exit_code, res.stdout) else 0.0
    result.reward, result.passed = reward, reward >= 1.0
    if not result.passed:
        result.reason = "no-tests" if "no tests ran" in res.stdout else "tests-failed"
    return result


def _test_roots(files: dict[str, Path | str]) -> set[str]:
    """`/tests`, where the verifier's files go into it: the formats keep it for the tests."""
    return {TESTS for target in files if target == TESTS or target.startswith(TESTS + "/")}


def _offline_command(task: Task, sb: Sandbox) -> tuple[str, list]:
    """The verifier command, with its script rewritten when the sandbox has no network.

    The command runs one script (`bash /tests/run-tests.sh`), possibly after set-up steps
    joined with `&&` (Harbor's `mkdir -p /logs/verifier && bash /tests/test.sh`)."""
    command = task.verifier.command or "true"
    found = _SCRIPT_COMMAND.match(command)
    if task.network != "none" or found is None:
        return command, []
    script_path = found["path"]
    if not sb.exists(script_path):
        return command, []
    script, rewrites = make_offline(sb.read_text(script_path), _probe(sb))
    if not rewrites:
        return command, []
    offline_path = script_path + ".offline"
    sb.write_text(offline_path, script)
    return f"{found['head']}{found['shell']} {offline_path}", rewrites


def _probe(sb: Sandbox) -> Probe:
    def present(kind: str, names: list[str]) -> bool:
        if kind == "apt":
            return sb.exec(["dpkg", "-s", *names]).exit_code == 0
        modules = [n.lower().replace("-", "_") for n in names]
        # find_spec locates a module without importing it: ~10 ms instead of ~100 for pytest.
        code = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))"
        return sb.exec(["python3", "-c", code, *modules]).exit_code == 0

    return present


def _reward_file(sb: Sandbox, paths: list[str]) -> float | None:
    for path in paths:
        if not sb.exists(path):
            continue
        text = sb.read_text(path).strip()
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, dict):
            value = value.get("reward", 0.0)
        return float(value) if isinstance(value, int | float) else None
    return None


def _passed(parser: str, exit_code: int, stdout: str) -> bool:
    if exit_code != 0:
        return False
    if parser == "pytest":
        return not _FAILED.search(stdout) and "no tests ran" not in stdout
    return True
